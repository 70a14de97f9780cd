"""The bundle we ship as the default: intact, within its size budget, documented, and separating the demo clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unmix.runtime import Separator, read_manifest
from unmix.runtime.manifest import STEMS
from unmix.runtime.separator import DEFAULT_BUNDLE

DEMO = Path(__file__).resolve().parent.parent / "demo" / "demo.flac"
SIZE_BUDGET = 25_000_000  # bytes for every file of the bundle, fp32 and int8 together


def test_default_bundle_is_complete_and_within_its_size_budget():
    manifest = read_manifest(DEFAULT_BUNDLE)
    assert tuple(manifest.stems) == STEMS and {"fp32", "int8"} <= set(manifest.precisions)
    size = sum(path.stat().st_size for path in DEFAULT_BUNDLE.rglob("*") if path.is_file())
    assert size < SIZE_BUDGET, f"the default bundle holds {size:,} bytes"
    # what trained it, from what, for how long and where, as the issue asks of the provenance
    provenance = manifest.provenance
    stages = {stage["stage"] for stage in provenance["training_stages"]}
    assert {"generic", *(f"phase{p}-{stem}" for p in (1, 2) for stem in STEMS)} <= stages
    assert all(stage["seconds"] > 0 and stage["machine"] for stage in provenance["training_stages"])
    assert set(provenance["sources"]) == set(STEMS)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_default_bundle_separates_the_demo_clip(precision):
    clip, rate = sf.read(DEMO, dtype="float32", frames=2 * 44100, always_2d=True)
    separator = Separator.from_bundle("default", precision=precision)  # verifies every file's sha256
    stems = separator.separate(clip, rate)
    assert list(stems) == list(STEMS)
    for stem, audio in stems.items():
        assert audio.shape == clip.shape and np.isfinite(audio).all(), stem
        assert np.sqrt(np.mean(audio**2)) > 1e-4, f"{stem} is silent"
