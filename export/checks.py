"""Structural checks of an exported graph: the ONNX checker, shape inference, and ONNX Runtime runs.

Every failure raises `ExportError` with a one-line message naming the file and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from unmix.runtime.manifest import CODES_NAME, INPUT_NAME


class ExportError(RuntimeError):
    """An export that failed a check; nothing is written when this is raised."""


def check_model(path: str | Path) -> None:
    """onnx.checker's full check (which includes strict shape inference) plus typed shape inference."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"{Path(path).name}: ONNX check failed: {str(error).splitlines()[0]}") from None
    for output in inferred.graph.output:
        if not output.type.tensor_type.HasField("shape"):
            raise ExportError(f"{Path(path).name}: shape inference left output {output.name!r} without a shape")


def cpu_session(path: str | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def probe_lengths(hop_length: int) -> list[int]:
    """Three time lengths to run: short, an odd multiple of the hop, and a few hundred frames."""
    return [16 * hop_length, 125 * hop_length, 512 * hop_length]


# mixture, the graph's outputs → the expected outputs (a reference may accept the graph's choice of
# code at fp32 ties, see ties.py; a `tie_frames` entry counts them)
Reference = Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]]


def check_runs(
    path: str | Path,
    hop_length: int,
    *,
    batches: tuple[int, ...] = (1, 3),
    reference: Reference | None = None,
    atol: float = 1e-4,
    batch_independent: bool = True,
    label: str | None = None,
) -> list[dict]:
    """Run the graph on ONNX Runtime CPU at three lengths and each batch size.

    Checks output shapes, dtypes and finiteness; with `batch_independent`, that item 0 (the same
    input at every batch size) gets the same outputs (codes exactly, audio within `atol`); given
    `reference`, identical codes and audio within `atol`.
    Returns one row per run for the report; `label` names the graph there and in errors.
    """
    name = label or Path(path).name
    session = cpu_session(path)
    output_names = [output.name for output in session.get_outputs()]
    rng = np.random.default_rng(0)
    rows = []
    for length in probe_lengths(hop_length):
        item = (0.1 * rng.standard_normal((1, length))).astype(np.float32)
        alone: dict[str, np.ndarray] = {}
        for batch in batches:
            mixture = (0.1 * rng.standard_normal((batch, 1, length))).astype(np.float32)
            mixture[0] = item
            outputs = dict(zip(output_names, session.run(None, {INPUT_NAME: mixture}), strict=False))
            where = f"{name} at batch {batch}, {length} samples"
            _check_outputs(where, outputs, batch, length, hop_length)
            if batch_independent and alone:
                _compare(
                    f"{where} (item 0 against batch {batches[0]})", {k: v[:1] for k, v in outputs.items()}, alone, atol
                )
            alone = alone or {k: v[:1] for k, v in outputs.items()}
            row = {"graph": name, "batch": batch, "samples": length}
            if reference is not None:
                expected = reference(mixture, outputs)
                row |= _compare(where, outputs, expected, atol)
                if "tie_frames" in expected:
                    row["tie_frames"] = int(expected["tie_frames"])
            rows.append(row)
    return rows


def _check_outputs(where: str, outputs: dict[str, np.ndarray], batch: int, length: int, hop_length: int) -> None:
    for output, value in outputs.items():
        expected = (batch, length // hop_length) if output == CODES_NAME else (batch, 1, length)
        if value.shape != expected:
            raise ExportError(f"{where}: output {output!r} has shape {value.shape}, expected {expected}")
        if output == CODES_NAME and value.dtype != np.int64:
            raise ExportError(f"{where}: codes are {value.dtype}, expected int64")
        if output != CODES_NAME and (value.dtype != np.float32 or not np.isfinite(value).all()):
            raise ExportError(f"{where}: output {output!r} is not finite float32")


def _compare(where: str, outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float) -> dict:
    row = {}
    for output, value in outputs.items():
        if output == CODES_NAME:
            agreement = float((value == expected[output]).mean())
            if agreement < 1.0:
                raise ExportError(
                    f"{where}: codes agree with the reference on {100 * agreement:.3f} % of frames, not 100 %"
                )
            row["code_agreement"] = agreement
        else:
            error = float(np.abs(value - expected[output]).max())
            if error > atol:
                raise ExportError(f"{where}: {output!r} differs from the reference by {error:.3g} > {atol:g}")
            row[f"max_abs_{output}"] = error
    return row
