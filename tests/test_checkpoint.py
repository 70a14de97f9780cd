"""Strict loading of every checkpoint format the paper's world uses, and of our own."""

import json
import pathlib

import pytest
import torch
from jukebox_layout import forget_jukebox, make_hparams, official_state, save_jukebox_style
from typer.testing import CliRunner

from unmix.train import PAPER, TINY, VQVAE, CheckpointError, build_encoder, build_vqvae, read_checkpoint
from unmix.train.checkpoint import write_checkpoint
from unmix.train.cli import app


@pytest.fixture(scope="module")
def paper_model() -> VQVAE:
    torch.manual_seed(0)
    model = VQVAE(PAPER)
    model.codebook.k.normal_()
    return model


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-tar"])
@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "module-prefix"])
def test_official_jukebox_file_loads_level0(tmp_path, paper_model, legacy, prefix):
    hps = make_hparams({"sr": 44100, "levels": 3}, tmp_path)
    path = save_jukebox_style(tmp_path / "vqvae.pth.tar", official_state(paper_model), hps, legacy, prefix)
    forget_jukebox()  # the loader must not need Jukebox installed
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "jukebox-official"
    assert checkpoint.total_keys == 669 and len(checkpoint.state) == 211
    assert checkpoint.meta["hps"]["sr"] == 44100
    _assert_same_weights(build_vqvae(checkpoint), paper_model)


def test_paper_phase1_and_phase2_files(tmp_path, paper_model):
    phase1 = save_jukebox_style(tmp_path / "checkpoint_step_80001.pth.tar", paper_model.state_dict())
    encoder_state = {k: v for k, v in paper_model.state_dict().items() if k.startswith("encoders.0.")}
    phase2 = save_jukebox_style(tmp_path / "encoder_step_120001.pth.tar", encoder_state)
    first, second = read_checkpoint(phase1), read_checkpoint(phase2)
    assert (first.format, len(first.state), first.parts) == ("unmix-phase1", 211, ["encoder", "decoder", "codebook"])
    assert (second.format, len(second.state), second.parts) == ("unmix-phase2", 104, ["encoder"])
    _assert_same_weights(build_vqvae(first), paper_model)
    _assert_same_weights(build_encoder(second), paper_model.encoder)
    with pytest.raises(CheckpointError, match="without decoder, codebook"):
        build_vqvae(second)


def test_mismatched_keys_are_named(tmp_path, paper_model):
    state = paper_model.state_dict()
    state.pop("decoders.0.out.bias")
    state["decoders.0.out.weight"] = torch.zeros(1, 64, 5)
    state["decoders.0.extra.weight"] = torch.zeros(1)
    checkpoint = read_checkpoint(save_jukebox_style(tmp_path / "bad.pth.tar", state))
    with pytest.raises(CheckpointError) as error:
        build_vqvae(checkpoint)
    message = str(error.value)
    assert "missing (1): decoders.0.out.bias" in message
    assert "unexpected (1): decoders.0.extra.weight" in message
    assert "decoders.0.out.weight (1, 64, 5) != (1, 64, 3)" in message


def test_wrong_config_is_a_clear_error(tmp_path):
    tiny = VQVAE(TINY)
    checkpoint = read_checkpoint(save_jukebox_style(tmp_path / "tiny.pth.tar", tiny.state_dict()))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        build_vqvae(checkpoint)  # a foreign file carries no config: the paper's is assumed


class _Marker:
    """An object whose unpickling would create a file: proves a refused load runs no code."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_pickle_with_code_is_refused_without_opt_in(tmp_path, paper_model):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth.tar"
    torch.save({"model": paper_model.state_dict(), "opt": _Marker(marker), "step": 1}, path)
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        read_checkpoint(path)
    assert not marker.exists()
    with pytest.warns(UserWarning, match="trust_pickle=True"):
        checkpoint = read_checkpoint(path, trust_pickle=True)
    assert marker.exists() and checkpoint.format == "unmix-phase1"


def test_unreadable_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read as a torch checkpoint"):
        read_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth.tar")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="'model'"):
        read_checkpoint(tmp_path / "other.pt")


def test_our_format_round_trips(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(TINY)
    folder = write_checkpoint(tmp_path / "ckpt", model.state_dict(), TINY, {"role": "vqvae", "step": 7})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    checkpoint = read_checkpoint(folder)
    assert (checkpoint.format, checkpoint.config, checkpoint.step) == ("unmix", TINY, 7)
    _assert_same_weights(build_vqvae(checkpoint), model)
    write_checkpoint(folder, VQVAE(TINY).state_dict(), TINY, {"role": "vqvae", "step": 8})  # replace in place
    assert read_checkpoint(folder).step == 8


def test_inspect_reports_each_format(tmp_path, paper_model):
    runner = CliRunner()
    files = {
        "jukebox-official": save_jukebox_style(tmp_path / "vqvae.pth.tar", official_state(paper_model)),
        "unmix-phase1": save_jukebox_style(tmp_path / "p1.pth.tar", paper_model.state_dict()),
        "unmix-phase2": save_jukebox_style(
            tmp_path / "p2.pth.tar", {k: v for k, v in paper_model.state_dict().items() if k.startswith("encoders.0.")}
        ),
        "unmix": write_checkpoint(tmp_path / "ours", paper_model.state_dict(), PAPER, {"role": "vqvae", "step": 3}),
    }
    for kind, path in files.items():
        result = runner.invoke(app, ["inspect", str(path), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["format"] == kind
        assert report["parameters"]["encoder"] == 441_856
        if kind != "unmix-phase2":
            assert report["parameters"] | {} == {"encoder": 441_856, "decoder": 458_177, "codebook": 131_072}
            assert report["level0_keys"] == 211
    text = runner.invoke(app, ["inspect", str(files["jukebox-official"])])
    assert "jukebox-official" in text.output and "441,856" in text.output
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nope.pth")])
    assert missing.exit_code == 2 and "error:" in missing.output
