"""A tiny real bundle for the runtime tests, exported once per test session with `unmix.export`.

The tests may use torch and unmix.export to build it; the runtime under test never imports them. With
`UNMIX_TEST_BUNDLES` set to a folder, bundles are kept there and reused: a venv without torch (the runtime as
users install it, `scripts/test.sh`) runs the runtime tests on the bundles a full venv exported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

STEMS = ("bass", "vocals")  # two stems keep the export quick; stem selection still has a choice
_built: dict[tuple[str, ...], Path] = {}


def tiny_bundle(tmp_path_factory, stems: tuple[str, ...] = STEMS) -> Path:
    """The session's bundle of `stems` (built on first use); all four stems make refinement possible."""
    if stems not in _built:
        kept = os.environ.get("UNMIX_TEST_BUNDLES")
        name = "-".join(stems)
        folder = Path(kept) / name if kept else tmp_path_factory.mktemp("runtime-bundle") / name
        if not (folder / "manifest.json").is_file():
            partial = folder.with_name(f".{name}.partial")  # renamed whole: a killed export leaves no bundle
            shutil.rmtree(partial, ignore_errors=True)
            _export(partial, stems)
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
        _built[stems] = folder
    return _built[stems]


def _export(folder: Path, stems: tuple[str, ...]) -> None:
    from tiny_models import tiny_separator

    from unmix.export import export_bundle
    from unmix.export.audio import synthetic_audio
    from unmix.train.config import TINY

    export_bundle(
        {stem: tiny_separator(seed) for seed, stem in enumerate(stems, start=1)},
        folder,
        provenance={"source": "tests/runtime_bundle.py: random TINY separators"},
        parity_audio=synthetic_audio(TINY.sample_rate, TINY.hop_length, segments=1, seconds=0.5),
    )


def tiny_openvino_engine(tmp_path_factory, precision: str = "fp32"):
    """The OpenVINO engine of the session's bundle of `STEMS`, on one thread."""
    from unmix.runtime import openvino_backend
    from unmix.runtime.manifest import read_manifest

    bundle = tiny_bundle(tmp_path_factory)
    paths = {stem: bundle / f"{stem}.onnx" for stem in STEMS}
    return openvino_backend.OpenVinoEngine(paths, read_manifest(bundle), threads=1, precision=precision)
