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
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

from unmix.runtime.manifest import CODES_NAME, INPUT_NAME, OUTPUT_NAME
from unmix.train.model import StemSeparator

from .audio import ParityAudio

REFERENCE = "pytorch"
FP32_MAX_ABS = 1e-3  # waveform error allowed to the fp32 graph; typical errors are ~1e-6
FP32_MAX_SDR_DELTA = 0.01  # dB
PARITY_JSON, PARITY_MD = "parity.json", "parity.md"


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The paper's SDR (eq. 2): 10·log10((Σs² + 1e-7) / (Σ(s − ŝ)² + 1e-7)), in dB."""
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return float(10 * np.log10((np.sum(reference**2) + 1e-7) / (np.sum((reference - estimate) ** 2) + 1e-7)))


def snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10·log10(Σs² / Σ(s − ŝ)²) in dB; inf when identical."""
    noise = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


class TorchRunner(BaseRunner):
    """A Polygraphy runner for a `StemSeparator` on the CPU (Polygraphy's PytRunner assumes CUDA)."""

    def __init__(self, separator: StemSeparator):
        super().__init__(name=REFERENCE, prefix=REFERENCE)
        self.separator = separator

    def get_input_metadata_impl(self) -> TensorMetadata:
        return TensorMetadata().add(INPUT_NAME, np.float32, (-1, 1, -1))

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        start = time.perf_counter()
        with torch.no_grad():
            stem, codes = self.separator.eval()(torch.from_numpy(feed_dict[INPUT_NAME]))
        self.inference_time = time.perf_counter() - start
        return OrderedDict([(OUTPUT_NAME, stem.numpy()), (CODES_NAME, codes.numpy())])


def measure_parity(
    separators: dict[str, StemSeparator], graphs: dict[str, dict[str, Path]], audio: ParityAudio
) -> dict:
    """Compare every graph (`graphs[precision][stem]`) with its PyTorch separator on `audio`.

    Returns the report: per precision and stem, code agreement, max-abs error, SNR and SDR of the
    graph's output against PyTorch's, and, where the true stem is known, the SDR change.
    """
    feeds = [{INPUT_NAME: mixture[:, None, :]} for mixture in audio.mixtures]
    results: dict[str, dict[str, dict]] = {precision: {} for precision in graphs}
    polygraphy_fp32: dict[str, bool] = {}
    for stem, separator in separators.items():
        runners = [TorchRunner(separator)] + [
            OnnxrtRunner(SessionFromOnnx(str(graphs[p][stem]), providers=["cpu"]), name=p) for p in graphs
        ]
        # Polygraphy's relative-error statistics divide by zeros in silent stretches: not our concern.
        with G_LOGGER.verbosity(G_LOGGER.ERROR), np.errstate(divide="ignore", invalid="ignore"):
            run_results = Comparator.run(runners, data_loader=feeds)
            if "fp32" in graphs:
                accuracy = Comparator.compare_accuracy(
                    run_results,
                    comparisons=[(0, 1 + list(graphs).index("fp32"))],
                    compare_func=SimpleCompareFunc(atol={OUTPUT_NAME: FP32_MAX_ABS, CODES_NAME: 0}, rtol=0.0),
                )
                polygraphy_fp32[stem] = bool(accuracy)
        (_, reference), *graph_results = list(run_results.items())  # in runner order
        for precision, (_, iterations) in zip(graphs, graph_results):
            results[precision][stem] = _metrics(reference, iterations, audio.stems.get(stem))
    for stem, passed in polygraphy_fp32.items():
        results["fp32"][stem]["polygraphy_simple_compare"] = "pass" if passed else "fail"
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
        "sdr_vs_pytorch_db": float(np.mean([sdr(r, e) for r, e in zip(ref_audio, est_audio)])),
    }
    if truth is not None:
        row["sdr_pytorch_db"] = float(np.mean([sdr(t, r) for t, r in zip(truth, ref_audio)]))
        row["sdr_db"] = float(np.mean([sdr(t, e) for t, e in zip(truth, est_audio)]))
        row["sdr_delta_db"] = row["sdr_db"] - row["sdr_pytorch_db"]
    return row


def gate(report: dict, max_sdr_loss: float) -> dict[str, list[str]]:
    """Each precision's failures (empty lists pass); also stored in the report under `gates`.

    fp32: 100 % code agreement, waveform error ≤ FP32_MAX_ABS, |SDR change| ≤ 0.01 dB where measurable.
    int8/fp16: the SDR change must not be a loss beyond `max_sdr_loss` dB, which needs the true stems.
    """
    failures: dict[str, list[str]] = {}
    for precision, stems in report["results"].items():
        failures[precision] = []
        for stem, row in stems.items():
            delta = row.get("sdr_delta_db")
            if precision == "fp32":
                if row["code_agreement"] < 1.0:
                    failures[precision].append(f"{stem}: codes agree on {100 * row['code_agreement']:.4f} %")
                if row["max_abs_error"] > FP32_MAX_ABS:
                    failures[precision].append(f"{stem}: max-abs error {row['max_abs_error']:.3g}")
                if delta is not None and abs(delta) > FP32_MAX_SDR_DELTA:
                    failures[precision].append(f"{stem}: SDR changes by {delta:+.4f} dB")
            elif delta is None:
                failures[precision].append(f"{stem}: no true stem in the parity audio to measure the SDR loss")
            elif delta < -max_sdr_loss:
                failures[precision].append(f"{stem}: loses {-delta:.3f} dB SDR (limit {max_sdr_loss:g})")
    report["gates"] = {
        "fp32": {"code_agreement": 1.0, "max_abs_error": FP32_MAX_ABS, "abs_sdr_delta_db": FP32_MAX_SDR_DELTA},
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
        "| precision | stem | code agreement | max-abs error | SNR vs PyTorch (dB) | SDR PyTorch (dB) | SDR graph (dB) | SDR Δ (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision, stems in report["results"].items():
        for stem, row in stems.items():
            cells = [f"{row.get(k):.3f}" if row.get(k) is not None else "–" for k in ("sdr_pytorch_db", "sdr_db")]
            delta = f"{row['sdr_delta_db']:+.4f}" if row.get("sdr_delta_db") is not None else "–"
            lines.append(
                f"| {precision} | {stem} | {100 * row['code_agreement']:.3f} % | {row['max_abs_error']:.2e} "
                f"| {row['snr_db']:.1f} | {cells[0]} | {cells[1]} | {delta} |"
            )
    failures = report.get("gates", {}).get("failures", {})
    lines += ["", "Gates: fp32 needs 100 % code agreement and |SDR Δ| ≤ 0.01 dB; int8/fp16 may lose at most "
              f"{report.get('gates', {}).get('reduced_precision', {}).get('max_sdr_loss_db', '?')} dB."]
    for precision, problems in failures.items():
        verdict = "pass" if not problems else "FAIL: " + "; ".join(problems)
        if problems and report.get("forced"):
            verdict += " (written anyway: forced)"
        lines.append(f"- {precision}: {verdict}")
    (folder / PARITY_MD).write_text("\n".join(lines) + "\n")
