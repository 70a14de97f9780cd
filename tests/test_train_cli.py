"""`unmix-train phase1/phase2/plot` end to end: generic and stem VQ-VAEs, weight sources, one-line errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from jukebox_layout import official_state, save_jukebox_style
from synth_corpus import make_corpus
from train_helpers import phase1_options
from typer.testing import CliRunner

from unmix.train import PAPER, VQVAE
from unmix.train.cli import app
from unmix.train.distributed import connect
from unmix.train.options import TrainOptions
from unmix.train.phases import build_phase1

QUICK = [
    "--config",
    "tiny",
    "--chunk",
    "4096",
    "--batch",
    "2",
    "--warmup",
    "1",
    "--save-every",
    "0",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]


def _invoke(*arguments: str):
    return CliRunner().invoke(app, [str(argument) for argument in arguments])


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("data"), songs=4, seconds=1.0)


def test_generic_vqvae_seeds_a_stem_vqvae_and_plots(tmp_path, data):
    generic = tmp_path / "generic"
    result = _invoke(
        "phase1", "--data", data, "--out", generic, "--stem", "all", "--steps", 3, "--val-every", 3, *QUICK
    )
    assert result.exit_code == 0, result.output
    assert f"saved {generic / 'checkpoint'}" in result.output
    info = json.loads((generic / "checkpoint" / "config.json").read_text())
    assert (info["role"], info["stem"], info["step"]) == ("vqvae", "all", 3)
    assert {"val_sdr", "val_sdr_mixture", "val_sdr_drums", "val_sdr_vocals"} <= set(info["validation"])

    drums = tmp_path / "drums"
    result = _invoke(
        "phase1",
        "--data",
        data,
        "--out",
        drums,
        "--stem",
        "drums",
        "--init",
        f"unmix:{generic}",
        "--steps",
        2,
        "--val-every",
        0,
        *QUICK,
    )
    assert result.exit_code == 0, result.output
    provenance = json.loads((drums / "checkpoint" / "config.json").read_text())["provenance"]
    generic_weights = (generic / "checkpoint" / "model.safetensors").read_bytes()
    assert provenance["init"] == f"unmix:{generic}"
    assert provenance["init_sha256"] == hashlib.sha256(generic_weights).hexdigest()

    _one_line_error(
        _invoke(
            "phase2",
            "--data",
            data,
            "--out",
            tmp_path / "p2",
            "--stem",
            "bass",
            "--vqvae",
            drums,
            "--steps",
            1,
            *QUICK[2:],
        ),
        "a VQ-VAE of drums, not of bass",
    )
    _one_line_error(
        _invoke("phase1", "--data", data, "--out", tmp_path / "j", "--init", f"jukebox:{drums}", *QUICK),
        "not what jukebox: expects",
    )

    result = _invoke("plot", generic)
    assert result.exit_code == 0, result.output
    assert (generic / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_jukebox_weights_start_phase1_with_their_codebook_restored(tmp_path, data):
    torch.manual_seed(0)
    pretrained = VQVAE(PAPER)
    pretrained.codebook.k.normal_()
    path = save_jukebox_style(tmp_path / "vqvae.pth.tar", official_state(pretrained))
    options = phase1_options(data, tmp_path / "run", config=None, init=f"jukebox:{path}", chunk=8192, batch=3)
    with connect("cpu") as cluster:
        task = build_phase1(options, cluster)
    loaded = task.vqvae.state_dict()
    for key, value in pretrained.state_dict().items():
        assert torch.equal(loaded[key], value), key
    codebook = task.vqvae.codebook
    tokens_per_code = (8192 // 8) * 3 / PAPER.codebook_size  # Jukebox's restore_k: one step's tokens
    assert bool(codebook.initialised)  # so the first batch does not replace it (init_k)
    torch.testing.assert_close(codebook.k_elem, torch.full_like(codebook.k_elem, tokens_per_code))
    torch.testing.assert_close(codebook.k_sum, codebook.k * tokens_per_code)
    assert task.provenance["init"] == f"jukebox:{path}" and len(task.provenance["init_sha256"]) == 64
    assert not (tmp_path / "run").exists()  # nothing is written before training starts


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "{tmp}/absent"], "no such data folder"),
        (["--chunk", "4100"], "not a multiple of the model's hop (8)"),
        (["--stem", "piano"], "--stem 'piano'"),
        (["--config", "huge"], "neither a preset"),
        (["--remix", "2"], "--remix is a probability"),
    ],
)
def test_bad_options_are_one_line_errors_that_write_nothing(tmp_path, data, arguments, message):
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    defaults = ["--data", str(data), *QUICK]
    result = _invoke("phase1", "--out", tmp_path / "run", *defaults, *arguments)  # later options win
    _one_line_error(result, message)
    assert not (tmp_path / "run").exists()


# A value other than the default for every TrainOptions field a phase takes from its command line.
GIVEN = {
    "stem": "drums",
    "config": "tiny",
    "init": "unmix:/runs/generic",
    "vqvae": "unmix:/runs/p1",
    "steps": 11,
    "batch": 3,
    "chunk": 800,
    "lr": 0.5,
    "warmup": 7,
    "clip": 2.5,
    "ema_decay": 0.5,
    "seed": 9,
    "save_every": 13,
    "val_every": 17,
    "val_songs": 2,
    "val_chunks": 5,
    "val_data": Path("/data/unseen"),
    "stats_chunks": 6,
    "remix": 0.25,
    "shift": False,
    "blend": False,
    "gain_db": 4.5,
    "polarity": True,
    "eq_db": 2.5,
    "speed": 0.05,
    "workers": 1,
    "device": "cpu:9",
    "precision": "fp32",
    "resume": True,
    "trust_pickle": True,
    "progress": False,
}


@pytest.mark.parametrize(("phase", "absent"), [("phase1", "vqvae"), ("phase2", "config")])
def test_every_option_reaches_its_train_options_field(monkeypatch, tmp_path, phase, absent):
    """Each option of a phase lands in the TrainOptions field of its name, and every field but `absent` is one."""
    received = []
    monkeypatch.setattr(f"unmix.train.cli.train_{phase}", lambda options: received.append(options) or tmp_path)
    given = {name: value for name, value in GIVEN.items() if name != absent}
    defaults = TrainOptions(data=tmp_path, out=tmp_path)
    assert all(getattr(defaults, name) != value for name, value in given.items())  # so a miswiring shows
    assert set(given) | {"data", "out", absent} == {field.name for field in dataclasses.fields(TrainOptions)}
    arguments = [phase, "--data", tmp_path / "data", "--out", tmp_path / "run"]
    for name, value in given.items():
        flag = name.replace("_", "-")
        arguments += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", value]
    result = _invoke(*arguments)
    assert result.exit_code == 0, result.output
    (options,) = received
    assert (options.data, options.out) == (tmp_path / "data", tmp_path / "run")
    assert {name: getattr(options, name) for name in given} == given
    assert getattr(options, absent) is None
