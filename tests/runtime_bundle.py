"""A tiny real bundle for the runtime tests, exported once per test session with `unmix.export`.

The tests may use torch and unmix.export to build it; the runtime under test never imports them.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import tiny_separator

from unmix.export import export_bundle
from unmix.export.audio import synthetic_audio
from unmix.train.config import TINY

STEMS = ("bass", "vocals")  # two stems keep the export quick; stem selection still has a choice
_built: dict[tuple[str, ...], Path] = {}


def tiny_bundle(tmp_path_factory, stems: tuple[str, ...] = STEMS) -> Path:
    """The session's bundle of `stems` (built on first use); all four stems make refinement possible."""
    if stems not in _built:
        folder = tmp_path_factory.mktemp("runtime-bundle") / "-".join(stems)
        export_bundle(
            {stem: tiny_separator(seed) for seed, stem in enumerate(stems, start=1)},
            folder,
            provenance={"source": "tests/runtime_bundle.py: random TINY separators"},
            parity_audio=synthetic_audio(TINY.sample_rate, TINY.hop_length, segments=1, seconds=0.5),
        )
        _built[stems] = folder
    return _built[stems]
