"""The runtime stays lean: a full separation (API and CLI) loads no torch, unmix.train or unmix.export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from runtime_bundle import tiny_bundle
from runtime_inputs import write

PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from unmix.runtime import Separator
    from unmix.runtime.cli import app
    import unmix.runtime.doctor, unmix.runtime.tensorrt_backend, unmix.runtime.streaming  # every runtime module, optional too
    import unmix.runtime.openvino_backend

    source, out, bundle = map(Path, sys.argv[1:4])
    outputs = Separator.from_bundle(bundle).separate_file(source, out / "api").outputs
    app(["separate", str(source), "-o", str(out / "cli"), "--bundle", str(bundle), "-q"], standalone_mode=False)
    loaded = sorted(
        name for name in sys.modules
        if name.split(".")[0] in {"torch", "torchaudio", "onnx", "polygraphy"} or name.startswith(("unmix.train", "unmix.export"))
    )
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))
    print(json.dumps({"loaded": loaded, "written": written}))
    """
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, ("drums", "bass", "other", "vocals"))  # four: the default refinement runs


def test_a_full_separation_imports_no_torch_train_or_export(bundle, tmp_path):
    source = write(tmp_path / "song.wav", frames=20_000)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(source), str(tmp_path / "out"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert len(report["written"]) == 8  # four stems through the API, four through the CLI
