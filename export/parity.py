"""Parity of exported graphs with the PyTorch model on audio, and the gates an export must pass.

Polygraphy's Comparator runs every runner (PyTorch, then ONNX Runtime for each precision) on the same
audio items and checks the fp32 graph with its `simple` comparison; the figures a user cares about
(code agreement, SNR, the paper's SDR and its change) are computed from the same run results.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator, IterationResult, RunResults, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

from unmix.runtime.manifest import CODES_NAME, INPUT_NAME, OUTPUT_NAME
from unmix.train.metrics import sdr
from unmix.train.model import StemSeparator

from .audio import ParityAudio
from .reference import TorchReference

REFERENCE = "pytorch"
TIES_RESOLVED = "pytorch, fp32 ties resolved"
FP32_MAX_ABS = 1e-3  # waveform error allowed to the fp32 graph; typical errors are ~1e-6
FP32_MAX_SDR_DELTA = 0.01  # dB
PARITY_JSON, PARITY_MD = "parity.json", "parity.md"


def snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10·log10(Σs² / Σ(s − ŝ)²) in dB; inf when identical."""
    noise = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


class TorchRunner(BaseRunner):
    """A Polygraphy runner for the PyTorch reference on the CPU (Polygraphy's PytRunner assumes CUDA)."""

    def __init__(self, reference: TorchReference):
        super().__init__(name=REFERENCE, prefix=REFERENCE)
        self.reference = reference

    def get_input_metadata_impl(self) -> TensorMetadata:
        return TensorMetadata().add(INPUT_NAME, np.float32, (-1, 1, -1))

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        start = time.perf_counter()
        outputs = self.reference.outputs(feed_dict[INPUT_NAME])
        self.inference_time = time.perf_counter() - start
        return OrderedDict(outputs)


def measure_parity(
    separators: dict[str, StemSeparator], graphs: dict[str, dict[str, Path]], audio: ParityAudio
) -> dict:
    """Compare every graph (`graphs[precision][stem]`) with its PyTorch separator on `audio`.

    Returns the report: per precision and stem, code agreement, max-abs error, SNR and SDR of the
    graph's output against PyTorch's, and, where the true stem is known, the SDR change. For fp32,
    also the frames where fp32 could not decide the code (ties) and the real disagreements, and
    Polygraphy's verdict on the graph against the tie-resolved reference.
    """
    feeds = [{INPUT_NAME: mixture[:, None, :]} for mixture in audio.mixtures]
    results: dict[str, dict[str, dict]] = {precision: {} for precision in graphs}
    for stem, separator in separators.items():
        reference = TorchReference(separator)
        runners = [TorchRunner(reference)] + [
            OnnxrtRunner(SessionFromOnnx(str(graphs[p][stem]), providers=["cpu"]), name=p) for p in graphs
        ]
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            (_, expected), *graph_results = list(Comparator.run(runners, data_loader=feeds).items())
        for precision, (_, iterations) in zip(graphs, graph_results, strict=False):
            row = _metrics(expected, iterations, audio.stems.get(stem))
            if precision == "fp32":
                row |= _fp32_exactness(reference, expected, iterations)
            results[precision][stem] = row
    return {
        "audio": {
            "description": audio.description,
            "synthetic": audio.synthetic,
            "items": len(audio.mixtures),
            "channels_as_batch": sorted({m.shape[0] for m in audio.mixtures}),
            "seconds": round(audio.seconds, 3),
            "stems_known": sorted(audio.stems),
        },
        "reference": "PyTorch fp32 StemSeparator (unmix.train) on the CPU; graphs on ONNX Runtime CPU",
        "results": results,
    }


def _metrics(reference: list, estimate: list, truth: list[np.ndarray] | None) -> dict:
    ref_audio = [r[OUTPUT_NAME][:, 0] for r in reference]
    est_audio = [e[OUTPUT_NAME][:, 0] for e in estimate]
    ref_codes = np.concatenate([r[CODES_NAME].ravel() for r in reference])
    est_codes = np.concatenate([e[CODES_NAME].ravel() for e in estimate])
    flat_ref, flat_est = np.concatenate([a.ravel() for a in ref_audio]), np.concatenate([a.ravel() for a in est_audio])
    row = {
        "code_agreement": float((ref_codes == est_codes).mean()),
        "frames": int(ref_codes.size),
        "max_abs_error": float(np.abs(flat_ref - flat_est).max()),
        "snr_db": snr(flat_ref, flat_est),
        "sdr_vs_pytorch_db": float(np.mean([sdr(r, e) for r, e in zip(ref_audio, est_audio, strict=False)])),
    }
    if truth is not None:
        row["sdr_pytorch_db"] = float(np.mean([sdr(t, r) for t, r in zip(truth, ref_audio, strict=False)]))
        row["sdr_db"] = float(np.mean([sdr(t, e) for t, e in zip(truth, est_audio, strict=False)]))
        row["sdr_delta_db"] = row["sdr_db"] - row["sdr_pytorch_db"]
    return row


def _fp32_exactness(reference: TorchReference, expected: list, iterations: list) -> dict:
    """Ties and real disagreements, and the graph against the reference with its ties resolved."""
    resolved, ties, real = RunResults(), 0, 0
    resolved_iterations = []
    for raw, graph in zip(expected, iterations, strict=False):
        outputs, item_ties, item_real = reference.resolved(raw, graph[CODES_NAME])
        ties, real = ties + item_ties, real + item_real
        resolved_iterations.append(IterationResult(outputs=outputs, runner_name=TIES_RESOLVED))
    resolved.append((TIES_RESOLVED, resolved_iterations))
    resolved.append(("fp32", iterations))
    compare = SimpleCompareFunc(atol={OUTPUT_NAME: FP32_MAX_ABS, CODES_NAME: 0}, rtol=0.0)
    # Polygraphy's relative-error statistics divide by zeros in silent stretches: not our concern.
    with G_LOGGER.verbosity(G_LOGGER.ERROR), np.errstate(divide="ignore", invalid="ignore"):
        verdict = Comparator.compare_accuracy(resolved, compare_func=compare)
    errors = [
        np.abs(r[OUTPUT_NAME] - g[OUTPUT_NAME]).max() for r, g in zip(resolved_iterations, iterations, strict=False)
    ]
    return {
        "tie_frames": ties,
        "real_disagreements": real,
        "max_abs_error_ties_resolved": float(max(errors)),
        "polygraphy_simple_compare": "pass" if bool(verdict) else "fail",
    }


def gate(report: dict, max_sdr_loss: float) -> dict[str, list[str]]:
    """Each precision's failures (empty lists pass); also stored in the report under `gates`.

    fp32: every code agrees except fp32 ties (see ties.py), waveform error ≤ FP32_MAX_ABS against the
    tie-resolved reference, |SDR change| ≤ 0.01 dB where measurable.
    int8/fp16: the SDR change must not be a loss beyond `max_sdr_loss` dB, which needs the true stems.
    """
    failures: dict[str, list[str]] = {}
    for precision, stems in report["results"].items():
        failures[precision] = []
        for stem, row in stems.items():
            delta = row.get("sdr_delta_db")
            if precision == "fp32":
                if row["real_disagreements"]:
                    failures[precision].append(f"{stem}: {row['real_disagreements']} frames choose another code")
                if row["max_abs_error_ties_resolved"] > FP32_MAX_ABS:
                    failures[precision].append(f"{stem}: max-abs error {row['max_abs_error_ties_resolved']:.3g}")
                if delta is not None and abs(delta) > FP32_MAX_SDR_DELTA:
                    failures[precision].append(f"{stem}: SDR changes by {delta:+.4f} dB")
            elif delta is None:
                failures[precision].append(f"{stem}: no true stem in the parity audio to measure the SDR loss")
            elif delta < -max_sdr_loss:
                failures[precision].append(f"{stem}: loses {-delta:.3f} dB SDR (limit {max_sdr_loss:g})")
    report["gates"] = {
        "fp32": {
            "real_disagreements": 0,
            "max_abs_error_ties_resolved": FP32_MAX_ABS,
            "abs_sdr_delta_db": FP32_MAX_SDR_DELTA,
        },
        "reduced_precision": {"max_sdr_loss_db": max_sdr_loss},
        "failures": failures,
    }
    return failures


def write_parity(folder: Path, report: dict) -> None:
    """parity.json (everything) and parity.md (a table for people)."""
    (folder / PARITY_JSON).write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    audio = report["audio"]
    lines = [
        "# Parity of the exported graphs with PyTorch",
        "",
        f"Audio: {audio['description']}; {audio['items']} items, {audio['seconds']:g} s in all"
        + (" — **synthetic signal, not real music**" if audio["synthetic"] else "")
        + f". True stems known: {', '.join(audio['stems_known']) or 'none'}.",
        f"Reference: {report['reference']}.",
        "",
        "| precision | stem | code agreement | fp32 ties / real disagreements | max-abs error | SNR vs PyTorch (dB) "
        "| SDR PyTorch (dB) | SDR graph (dB) | SDR Δ (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for precision, stems in report["results"].items():
        for stem, row in stems.items():
            cells = [f"{row.get(k):.3f}" if row.get(k) is not None else "–" for k in ("sdr_pytorch_db", "sdr_db")]
            delta = f"{row['sdr_delta_db']:+.4f}" if row.get("sdr_delta_db") is not None else "–"
            ties = f"{row['tie_frames']} / {row['real_disagreements']}" if "tie_frames" in row else "–"
            lines.append(
                f"| {precision} | {stem} | {100 * row['code_agreement']:.3f} % | {ties} | {row['max_abs_error']:.2e} "
                f"| {row['snr_db']:.1f} | {cells[0]} | {cells[1]} | {delta} |"
            )
    runs = report.get("ort_runs", [])
    if runs:
        lines += [
            "",
            f"ONNX Runtime CPU checks passed: {len(runs)} runs of {len({r['graph'] for r in runs})} graphs at "
            f"{sorted({r['samples'] for r in runs})} samples and batch sizes {sorted({r['batch'] for r in runs})} "
            "(shapes, dtypes, finite outputs, batch independence; fp32 graphs equal to PyTorch or to their source graph).",
        ]
    failures = report.get("gates", {}).get("failures", {})
    limit = report.get("gates", {}).get("reduced_precision", {}).get("max_sdr_loss_db", "?")
    lines += [
        "",
        "Gates: fp32 must choose PyTorch's code on every frame that fp32 can decide — a tie (two codes whose "
        "distances differ by less than fp32 rounding) may go either way, and the audio is then compared with "
        f"PyTorch's decoding of the graph's codes (≤ {FP32_MAX_ABS:g}) — and change SDR by at most "
        f"{FP32_MAX_SDR_DELTA} dB; int8/fp16 may lose at most {limit} dB of SDR.",
    ]
    for precision, problems in failures.items():
        verdict = "pass" if not problems else "FAIL: " + "; ".join(problems)
        if problems and report.get("forced"):
            verdict += " (written anyway: forced)"
        lines.append(f"- {precision}: {verdict}")
    (folder / PARITY_MD).write_text("\n".join(lines) + "\n")
