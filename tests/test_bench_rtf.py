"""`unmix-bench` (RTF) end to end on the tiny config: rows in their own processes, JSON, markdown and PNG.

Speed is never asserted: only that every row ran (or said clearly why not) and the report holds together.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from unmix.bench.cli import app
from unmix.bench.rtf import PAPER_RTF, RtfSettings


def test_rows_per_device():
    cpu = RtfSettings(device="cpu").rows()
    assert [(row.backend, row.variant) for row in cpu] == [
        ("pytorch", "eager-fp32"),
        ("ort", "fp32"),
        ("ort", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
        ("openvino", "bf16"),
        ("ort", "fp32/per-channel"),
        ("auto", "auto"),
        ("peer", "htdemucs"),
        ("peer", "umxl"),
    ]
    assert cpu[0].is_reference and cpu[0].label("cpu") == "PyTorch eager fp32 (paper-style reference)"
    assert "previous defaults" in cpu[6].label("cpu") and "defaults" in cpu[7].label("cpu")
    assert cpu[8].label("cpu").startswith("HT-Demucs")
    assert [row.runs(("track", 4)) for row in cpu[7:]] == [True] * 3  # peers run the four-stem track only
    assert [row.runs(("chunk", 4)) for row in cpu[7:]] == [True, False, False]
    cuda = [(row.backend, row.variant) for row in RtfSettings(device="cuda").rows()]
    torch_variants = ["eager-fp32", "eager-fp16", "cudagraph-fp16", "compile-fp16"]
    runtime = [("ort", "fp32"), ("ort", "fp16"), ("trt", "fp32"), ("trt", "fp16")]
    assert cuda == [("pytorch", variant) for variant in torch_variants] + runtime
    only_ort = RtfSettings(device="cuda", backends=("ort",), precisions=("fp16",)).rows()
    assert [(row.backend, row.variant) for row in only_ort] == [("pytorch", "eager-fp32"), ("ort", "fp16")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtf") / "results" / "rtf.json"
    args = ["--device", "cpu", "--config", "tiny", "--backend", "ort,trt", "--precision", "fp32"]
    args += ["--workloads", "chunk", "--repeats", "2", "--warmup", "0", "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_files(report):
    data = json.loads(report.read_text())
    assert (data["schema"], data["schema_version"]) == ("unmix-bench/rtf", 1)
    assert data["command"].startswith("unmix-bench") and data["created"]
    assert data["machine"]["cpu"] and data["machine"]["threads"] == 1 and "onnxruntime" in data["machine"]["libraries"]
    assert "random" in data["model"]["description"]
    markdown = report.with_suffix(".md").read_text()
    assert "PyTorch eager fp32 (paper-style reference)" in markdown and "ONNX Runtime CPU fp32" in markdown
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_measurements(report):
    data = json.loads(report.read_text())
    rows = {(m["backend"], m["variant"], m["scope"], m["stems"]): m for m in data["measurements"]}
    assert set(rows) == {
        (b, "fp32" if b != "pytorch" else "eager-fp32", "chunk", n) for b in ("pytorch", "ort", "trt") for n in (1, 4)
    }
    for backend in ("pytorch", "ort"):
        for stems in (1, 4):
            row = rows[(backend, "eager-fp32" if backend == "pytorch" else "fp32", "chunk", stems)]
            assert row["status"] == "ok" and len(row["seconds"]) == 2
            assert row["audio_seconds"] == pytest.approx(393216 / 44100)
            assert row["rtf"] == pytest.approx(row["median_s"] / row["audio_seconds"])
            assert row["ratio_to_paper"] == pytest.approx(row["rtf"] / (PAPER_RTF * stems))
            assert row["peak_rss_mib"] > 0 and len(row["cpu_seconds"]) == 2
            assert row["cpu_rtf"] == pytest.approx(row["median_cpu_s"] / row["audio_seconds"]) and row["cpu_rtf"] > 0
    reference = rows[("pytorch", "eager-fp32", "chunk", 4)]
    ort = rows[("ort", "fp32", "chunk", 4)]
    assert reference["ratio_to_reference"] == 1.0 and reference["cpu_ratio_to_reference"] == 1.0
    assert ort["ratio_to_reference"] == pytest.approx(ort["rtf"] / reference["rtf"])
    # the lean runtime's rows do not load torch: their peak memory is well below the PyTorch rows'
    assert ort["peak_rss_mib"] < reference["peak_rss_mib"]
    # TensorRT on a CPU: one clear line, not a crash
    trt = rows[("trt", "fp32", "chunk", 1)]
    assert trt["status"] == "unavailable" and trt["message"] and "\n" not in trt["message"]
    assert "TensorRT" in report.with_suffix(".md").read_text().split("Not measured:")[1]


def test_fidelity_against_the_reference(report):
    fidelity = json.loads(report.read_text())["fidelity"]
    assert fidelity["reference"].startswith("the PyTorch paper-style reference")
    rows = [row for row in fidelity["rows"] if row["backend"] == "ort"]
    assert {row["stem"] for row in rows} == {"drums", "bass", "other", "vocals"}
    for row in rows:  # the same weights, exported: the same codes (a rare fp32 near-tie aside) and audio
        assert row["code_agreement"] >= 0.999
        snr = math.inf if row["snr_db"] == "inf" else row["snr_db"]
        assert snr > 40 and abs(row["sdr_delta_db"]) < 0.01
    assert any("TensorRT" in line for line in fidelity["skipped"])


def test_bad_options_are_one_line_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--workloads", "song"])
    assert result.exit_code == 2 and "--workloads" in result.output
    result = runner.invoke(app, ["--bundle", str(tmp_path)])
    assert result.exit_code == 2 and "not a bundle" in result.output
    result = runner.invoke(app, ["--config", "huge", "--no-progress", "--json", str(tmp_path / "x.json")])
    assert (
        result.exit_code == 2 and "neither a preset" in result.output and len(result.output.strip().splitlines()) == 1
    )


def test_render_rewrites_markdown_and_plot_from_the_json(report, tmp_path):
    copy = tmp_path / "copy.json"
    copy.write_text(report.read_text())
    result = CliRunner().invoke(app, ["render", str(copy)])
    assert result.exit_code == 0, result.output
    assert copy.with_suffix(".md").read_text() == report.with_suffix(".md").read_text()
    assert copy.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something/else"}))
    result = CliRunner().invoke(app, ["render", str(tmp_path / "other.json")])
    assert result.exit_code == 2 and "not an unmix-bench report" in result.output


def test_openvino_defaults_and_peers_rows_run_the_track(tmp_path):
    """The rows added beside ONNX Runtime: OpenVINO, `unmix separate`'s defaults, HT-Demucs and Open-Unmix."""
    pytest.importorskip("openvino")
    out = tmp_path / "rtf.json"
    args = ["--device", "cpu", "--config", "tiny", "--backend", "openvino,defaults,peers", "--precision", "fp32"]
    args += ["--workloads", "track", "--track-seconds", "2", "--track-repeats", "1", "--warmup", "0"]
    args += ["--threads", "1", "--no-progress", "--no-fidelity"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {
        (m["backend"], m["variant"], m["scope"], m["stems"]): m for m in json.loads(out.read_text())["measurements"]
    }
    assert rows[("openvino", "fp32", "track", 4)]["status"] == "ok"
    assert rows[("auto", "auto", "track", 4)]["status"] == "ok"
    assert rows[("ort", "fp32/per-channel", "track", 4)]["status"] == "ok"
    for peer in ("htdemucs", "umxl"):
        assert rows[("peer", peer, "track", 4)]["status"] in ("ok", "unavailable")  # an optional extra
        assert ("peer", peer, "track", 1) not in rows
    assert "Open-Unmix" in out.with_suffix(".md").read_text()
