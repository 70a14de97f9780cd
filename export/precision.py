"""Derived graphs of an exported fp32 graph: int8 (static QDQ), and ONNX Runtime's offline-optimised copy.

int8 is calibrated by NNCF's post-training quantization by default, or by ONNX Runtime's static quantizer with
one of its calibrators; both write QDQ graphs that ONNX Runtime and OpenVINO run on their int8 kernels.

fp16 is exported from PyTorch directly (`StemGraph(half=True)`): converting the fp32 graph with
onnxconverter-common's `convert_float_to_float16` puts fp16 round trips *between* the blocked
nodes of the vq island (a Cast to fp16 and back after each node), which is exactly what the island
exists to avoid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from unmix.runtime.manifest import INPUT_NAME, OUTPUT_NAME

from .checks import ExportError
from .graph import is_vq_node

ORT_CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
NNCF = "nncf"
CALIBRATION_METHODS = (NNCF, *ORT_CALIBRATION_METHODS)  # the first is the default
# Operator domains that tie an optimised file to one CPU family (NCHWc blocked layouts need AVX2/AVX-512).
LAYOUT_SPECIFIC_DOMAINS = {"com.microsoft.nchwc"}


class _Chunks(CalibrationDataReader):
    """Mono chunks as `mixture` batches of one; `set_range` lets the MinMax calibrator go stride by stride."""

    def __init__(self, chunks: Sequence[np.ndarray]):
        self._chunks = list(chunks)
        self.set_range(0, len(self._chunks))

    def __len__(self) -> int:
        return len(self._chunks)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next: Iterator[np.ndarray] = iter(self._chunks[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._next, None)
        return None if chunk is None else {INPUT_NAME: np.asarray(chunk, np.float32).reshape(1, 1, -1)}


def int8_excluded_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes left in fp32: the vq island, the convolution that reads the audio and the one that writes it.

    Quantising the waveform itself to 8 bits would cap the SNR near 48 dB; the convolutions between
    see feature maps, where int8 is cheap in accuracy.
    """
    excluded = [node.name for node in model.graph.node if is_vq_node(node.name)]
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and (
            INPUT_NAME in node.input or OUTPUT_NAME in node.output or _feeds_vq(model, node)
        ):
            excluded.append(node.name)
    return excluded


def _feeds_vq(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Whether `node` is the encoder's last convolution (its output goes straight into the vq island)."""
    consumers = [n for n in model.graph.node if set(node.output) & set(n.input)]
    return bool(consumers) and all(is_vq_node(n.name) for n in consumers)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    *,
    method: str = NNCF,
    reduce_range: bool = False,
) -> Path:
    """Static QDQ int8 of the graph at `fp32_path`, calibrated on mono mixture chunks (each (T,), T a multiple of
    the hop), written to `out_path`. `int8_excluded_nodes` stay fp32 either way.

    `method` "nncf": NNCF's post-training quantization (MIXED preset: symmetric per-channel weights, asymmetric
    activations, then bias correction); the inputs of the residual sums stay fp32. "minmax", "entropy" or
    "percentile": ONNX Runtime's quantizer with that calibrator (signed activations, per-channel weights);
    `reduce_range` then uses 7-bit weights, which avoids the saturation of U8S8 kernels on x86 CPUs without VNNI,
    at some cost in accuracy.
    """
    out_path = Path(out_path)
    if method == NNCF:
        quantized = _quantize_nncf(onnx.load(str(fp32_path)), calibration)
        compact_tensor_names(quantized)
        onnx.save(quantized, str(out_path))
        return out_path
    prepared = out_path.with_name(out_path.name + ".pre.onnx")
    # Shape inference for the quantiser; its optimisation pass is skipped so node names (and with them
    # the exclusion list) stay those of the exported graph.
    quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True)
    model = onnx.load(str(prepared))
    prepared.unlink()
    quantize_static(
        model,
        str(out_path),
        _Chunks(calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=reduce_range,
        nodes_to_exclude=int8_excluded_nodes(model),
        calibrate_method=ORT_CALIBRATION_METHODS[method],
        # MinMax, one chunk per stride: the ranges are merged as it goes instead of keeping every
        # activation of every chunk (gigabytes for the paper's model). The histogram methods keep them
        # all. (CalibMaxIntermediateOutputs would bound memory too, but ORT 1.32 discards those
        # outputs unused.)
        extra_options={"CalibStridedMinMax": 1} if method == "minmax" else {},
    )
    quantized = onnx.load(str(out_path))
    compact_tensor_names(quantized)
    onnx.save(quantized, str(out_path))
    return out_path


def _quantize_nncf(model: onnx.ModelProto, calibration: Sequence[np.ndarray]) -> onnx.ModelProto:
    # NNCF reports each call to Google Analytics unless it believes it runs in CI: an export sends nothing.
    os.environ.setdefault("NNCF_CI", "1")
    import nncf  # imported here: heavy, and only an int8 export needs it

    nncf.set_log_level(logging.ERROR)
    dataset = nncf.Dataset([{INPUT_NAME: np.asarray(chunk, np.float32).reshape(1, 1, -1)} for chunk in calibration])
    # Quantised inputs to the residual sums cost most of the accuracy int8 loses (bench/results/int8-nncf-*);
    # the time goes to the convolutions, which stay int8.
    ignored = nncf.IgnoredScope(names=int8_excluded_nodes(model), types=["Add"])
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars, off the CLIs' stdout
        return nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            ignored_scope=ignored,
        )


def compact_tensor_names(model: onnx.ModelProto) -> None:
    """Renames every tensor but the graph's inputs and outputs to a short id, in place.

    The quantiser derives four long names from each weight ("…weight_quantized", "…_scale", …),
    each stored at its definition and at every use: a quarter of an int8 stem graph's bytes. Node
    names stay, so profiles still point at the exported PyTorch modules.
    """
    graph = model.graph
    keep = {value.name for value in [*graph.input, *graph.output]}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return short.setdefault(name, f"t{len(short):x}")

    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
    for value in graph.value_info:
        value.name = rename(value.name)


def optimize_for_ort(path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's offline optimisation at the EXTENDED level, for the CPU execution provider.

    EXTENDED fuses (Conv+Activation, QDQ → QLinear*, …) but does not rewrite layouts: the ALL level
    adds NCHWc ops that tie the file to the CPU it was optimised on, so it is refused here.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out_path)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(out_path))
    layout = sorted({node.domain for node in optimized.graph.node} & LAYOUT_SPECIFIC_DOMAINS)
    if layout:
        raise ExportError(f"{Path(out_path).name}: the optimised graph holds layout-specific ops ({layout})")
    del optimized.metadata_props[:]
    optimized.metadata_props.extend(onnx.load(str(path)).metadata_props)
    onnx.save(optimized, str(out_path))
    return Path(out_path)
