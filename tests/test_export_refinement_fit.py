"""Fitting the refinement's band weights: the gains find a decoder's noise floor, carry to unseen audio, and
`unmix-export --refinement-data` stores them in a bundle the runtime then refines with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from runtime_bundle import tiny_bundle
from synth_corpus import make_corpus
from typer.testing import CliRunner

from unmix.export.cli import app
from unmix.export.refinement_fit import Excerpt, fit_band_weights
from unmix.runtime import Separator, read_manifest
from unmix.runtime.manifest import STEMS
from unmix.runtime.refinement import WINDOW, refine
from unmix.train.metrics import sdr

RATE = 44100


def _excerpt(seed: int, seconds: float = 2.0) -> Excerpt:
    """Stems in bands of their own, estimated exactly except vocals, whose estimate carries a broadband noise
    floor (as a decoder's wrong codes leave) that buries drums' and other's high band."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    tones = {"drums": 7000.0, "bass": 90.0, "other": 12000.0, "vocals": 600.0}
    truth = {
        s: np.stack([np.sin(2 * np.pi * (f + rng.uniform(-5, 5)) * time + rng.uniform(0, 6))] * 2, 1).astype(np.float32)
        * 0.2
        for s, f in tones.items()
    }
    noise = (0.05 * rng.standard_normal((len(time), 2))).astype(np.float32)
    estimates = dict(truth, vocals=truth["vocals"] + noise)
    return Excerpt(sum(truth.values()), truth, estimates)


def test_the_fit_discounts_a_noise_floor_and_the_gains_carry_to_unseen_audio():
    weights, report = fit_band_weights([_excerpt(seed) for seed in range(2)], RATE, bands=4)
    high = int(np.searchsorted(weights.edges_hz, 7000.0)) - 1  # the band of drums' and other's tones
    assert weights.edges_hz[high] > 600 and weights.gains_db["vocals"][high] < -10, weights  # vocals do not sound there
    assert weights.gains_db["other"] == (0.0,) * 4  # the reference stem
    assert report["error_change_db"]["drums"] < -3 and report["error_change_db"]["other"] < -3
    unseen = _excerpt(7)
    plain = refine(unseen.mixture, unseen.estimates)
    fitted = refine(unseen.mixture, unseen.estimates, weights=weights.per_bin(WINDOW, RATE))
    for stem in ("drums", "other", "vocals"):
        assert sdr(unseen.truth[stem], fitted[stem]) > sdr(unseen.truth[stem], plain[stem]) + 3, stem


def _export(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_export_refits_an_existing_bundle_and_the_runtime_uses_the_weights(tmp_path_factory, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle(tmp_path_factory, STEMS), tmp_path / "bundle"))
    data = make_corpus(tmp_path / "data", songs=3, seconds=2.0)
    result = _export(
        "-o",
        bundle,
        "--refinement-data",
        data,
        "--refinement-songs",
        "1:3",
        "--refinement-seconds",
        1.5,
        "--refinement-bands",
        3,
        "--refinement-spread",
        "other=3,bass=1",
    )
    assert result.exit_code == 0, result.output
    assert "refinement band weights stored" in result.output
    manifest = read_manifest(bundle)  # still verifies: the graphs are untouched
    entry = manifest.refinement
    assert len(entry["band_weights"]["edges_hz"]) == 4 and set(entry["band_weights"]["gains_db"]) == set(STEMS)
    assert entry["fitted"]["songs"].startswith("training songs 1 to 2") and entry["fitted"]["bands"] == 3
    assert entry["spread_bins"] == {"other": 3}  # one bin is no spread
    separator = Separator.from_bundle(bundle)
    assert separator.refinement_spread == {"other": 3}
    assert all(np.any(gains != 1) for stem, gains in separator.refinement_weights.items() if stem != "other")
    assert not list(bundle.glob("*.tmp"))  # written by rename, nothing left over


def test_bad_refinement_options_fail_in_one_line(tmp_path):
    result = _export("-o", tmp_path / "none", "--refinement-data", tmp_path, "--refinement-songs", "5:2")
    assert result.exit_code == 2 and "START:STOP" in result.output
    result = _export("-o", tmp_path / "x", "--stem", "bass", "--checkpoint", tmp_path, "--refinement-data", tmp_path)
    assert result.exit_code == 2 and "needs all four stems" in result.output
    for spec in ("other=2", "piano=3", "other"):
        result = _export("-o", tmp_path / "none", "--refinement-data", tmp_path, "--refinement-spread", spec)
        assert result.exit_code == 2 and "--refinement-spread" in result.output, spec
    result = _export("-o", tmp_path / "none", "--refinement-data", tmp_path)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "no such bundle" in errors[0]
