"""`unmix stream`: raw samples in through a pipe or file, stems written whole, the low-latency stream's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from runtime_bundle import tiny_bundle
from typer.testing import CliRunner

from unmix.runtime import Separator
from unmix.runtime.cli import app

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def stream_cli(*args):
    return CliRunner().invoke(app, ["stream", *map(str, args)])


def test_stream_writes_the_stems_a_low_latency_stream_computes(bundle, tmp_path):
    separator = Separator.from_bundle(bundle, backend="openvino", precision="fp32", refine=False)
    rate = separator.sample_rate
    audio = (0.3 * np.random.default_rng(1).standard_normal((5000, 2))).astype(np.float32)
    raw = tmp_path / "input.f32"
    raw.write_bytes(audio.astype("<f4").tobytes())
    result = stream_cli(
        raw,
        "-o",
        tmp_path / "out",
        "--rate",
        rate,
        "--channels",
        2,
        "--block",
        0.01,
        "--bundle",
        bundle,
        "--backend",
        "openvino",
        "--precision",
        "fp32",
        "--no-refine",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert "stems trail the input by at most" in result.output
    expected = separator.separate(audio, rate)
    for stem in separator.stems:
        written, written_rate = sf.read(tmp_path / "out" / f"{stem}.wav", dtype="float32")
        assert written_rate == rate and written.shape == audio.shape
        np.testing.assert_allclose(written, expected[stem], rtol=0, atol=1e-5 * np.abs(expected[stem]).max())
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(f"{s}.wav" for s in separator.stems)


@pytest.mark.parametrize(
    "data,message", [(b"\0" * 10, "stray bytes"), (np.array([0.1, np.nan], "<f4").tobytes(), "non-finite")]
)
def test_bad_raw_input_is_one_line_and_leaves_nothing(bundle, tmp_path, data, message):
    raw = tmp_path / "input.f32"
    raw.write_bytes(data)
    result = stream_cli(raw, "-o", tmp_path / "out", "--channels", 2, "--bundle", bundle, "--backend", "openvino", "-q")
    assert result.exit_code == 1
    assert message in result.output and result.output.count("error:") == 1
    assert not any((tmp_path / "out").iterdir())


def test_a_missing_source_is_one_line(bundle, tmp_path):
    result = stream_cli(tmp_path / "nothing.f32", "-o", tmp_path / "out", "--bundle", bundle, "-q")
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
