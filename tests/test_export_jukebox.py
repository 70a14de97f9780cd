"""unmix-export from foreign files: a Jukebox-format three-level VQ-VAE and the paper's phase-2 encoder pickle."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import torch
from jukebox_layout import official_state, save_jukebox_style
from test_export_bundle import tiny_separator
from typer.testing import CliRunner

from unmix.export.cli import app
from unmix.runtime.manifest import read_manifest
from unmix.train.config import TINY
from unmix.train.model import VQVAE, StemSeparator

QUICK = ["--parity-segments", "1", "--parity-seconds", "0.25", "--no-ort-optimized"]


def level0_state(separator: StemSeparator, parts=("encoder", "decoder", "codebook")) -> dict[str, torch.Tensor]:
    """A separator's weights under Jukebox's level-0 key names (its ME stands in for the VQ-VAE's encoder)."""
    state = {}
    if "encoder" in parts:
        state |= {f"encoders.0.{k}": v for k, v in separator.mixture_encoder.state_dict().items()}
    if "decoder" in parts:
        state |= {f"decoders.0.{k}": v for k, v in separator.stem_decoder.state_dict().items()}
    if "codebook" in parts:
        state["bottleneck.level_blocks.0.k"] = separator.codebook.k.clone()
    return state


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def ort_outputs(path, mixture: torch.Tensor):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"mixture": mixture.numpy()})


def test_jukebox_checkpoint_exports_what_pytorch_computes(tmp_path):
    """The official layout (3 levels, `module.` prefix, old tar format) of a tiny model: codes identical, audio ±1e-4."""
    vqvae = VQVAE(TINY)
    vqvae.load_state_dict(level0_state(tiny_separator(21)))
    state = official_state(vqvae)
    assert any(key.startswith("encoders.1.") for key in state) and any(key.startswith("decoders.2.") for key in state)
    path = save_jukebox_style(
        tmp_path / "vqvae.pth.tar", state, {"sr": 44100, "levels": 3}, legacy=True, prefix="module."
    )

    result = run("--stem", "vocals", "--vqvae", path, "--config", "tiny", "-o", tmp_path / "bundle", *QUICK)
    assert result.exit_code == 0, result.output

    manifest = read_manifest(tmp_path / "bundle")
    source = manifest.provenance["sources"]["vocals"]
    assert source["vqvae"]["format"] == "jukebox-official" and len(source["vqvae"]["sha256"]) == 64
    assert "own encoder" in source["encoder"]
    reference = StemSeparator.from_vqvae(vqvae).eval()
    for batch, length in ((1, 8 * 50), (3, 8 * 777)):
        mixture = torch.randn(batch, 1, length, generator=torch.Generator().manual_seed(length)) * 0.5
        stem, codes = ort_outputs(tmp_path / "bundle" / "vocals.onnx", mixture)
        with torch.no_grad():
            expected_stem, expected_codes = reference(mixture)
        np.testing.assert_array_equal(codes, expected_codes.numpy())
        assert np.abs(stem - expected_stem.numpy()).max() <= 1e-4


def test_paper_phase2_encoder_serves_as_mixture_encoder(tmp_path):
    """--vqvae PHASE1 --encoder PHASE2 (the paper's pickles): ME from the encoder file, SD and codebook from the VQ-VAE."""
    stem_model, mixture_model = tiny_separator(31), tiny_separator(32)
    save_jukebox_style(tmp_path / "bass-vqvae.pth.tar", level0_state(stem_model))
    save_jukebox_style(tmp_path / "bass-encoder.pth.tar", level0_state(mixture_model, parts=("encoder",)))

    result = run(
        "--stem",
        "bass",
        "--vqvae",
        tmp_path / "{stem}-vqvae.pth.tar",
        "--encoder",
        tmp_path / "{stem}-encoder.pth.tar",
        "--config",
        "tiny",
        "-o",
        tmp_path / "bundle",
        *QUICK,
    )
    assert result.exit_code == 0, result.output
    sources = read_manifest(tmp_path / "bundle").provenance["sources"]["bass"]
    assert (sources["vqvae"]["format"], sources["encoder"]["format"]) == ("unmix-phase1", "unmix-phase2")
    expected = StemSeparator(mixture_model.mixture_encoder, stem_model.codebook, stem_model.stem_decoder).eval()
    mixture = torch.randn(2, 1, 8 * 300, generator=torch.Generator().manual_seed(0))
    stem, codes = ort_outputs(tmp_path / "bundle" / "bass.onnx", mixture)
    with torch.no_grad():
        expected_stem, expected_codes = expected(mixture)
    np.testing.assert_array_equal(codes, expected_codes.numpy())
    assert np.abs(stem - expected_stem.numpy()).max() <= 1e-4
    report = json.loads((tmp_path / "bundle" / "parity.json").read_text())
    assert report["results"]["fp32"]["bass"]["real_disagreements"] == 0


def test_foreign_file_of_another_size_names_the_fix(tmp_path):
    """Without --config a tiny Jukebox file is read as the paper's size: a one-line error, no bundle."""
    path = save_jukebox_style(tmp_path / "vqvae.pth.tar", level0_state(tiny_separator(41)))
    result = run("--stem", "other", "--vqvae", path, "-o", tmp_path / "bundle", *QUICK)
    assert result.exit_code == 2
    assert "mis-shaped" in result.output and "--config" in result.output
    assert not (tmp_path / "bundle").exists()
