"""`unmix-export --trt`: TensorRT engines for a bundle's fp16 graphs, in the bundle's engine cache.

UNTESTED: written without access to an NVIDIA GPU or TensorRT; see runtime/engine_cache.py, which
holds the (torch-free) key, lookup and build logic that the runtime shares.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from unmix.runtime.engine_cache import ENGINE_DIR, Profile, build_engine, default_profiles, engine_key, find_engine
from unmix.runtime.manifest import read_manifest

from .checks import ExportError

TRT_PRECISION = "fp16"  # the graphs with explicit fp16 casts and an fp32 vq island
TRT_OPSETS = range(9, 25)

# The ONNX operators our graphs use or an exporter may emit around them, with the data types that
# onnx-tensorrt supports for their first input. Source: onnx/onnx-tensorrt docs/operators.md,
# "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24" (every op here is
# also in the TensorRT 10.0 table, opset 9-20). QuantizeLinear/DequantizeLinear are absent on purpose:
# TensorRT needs zero points of 0, and our int8 graphs (asymmetric activations) are for ONNX Runtime only.
_FLOAT = {"FLOAT", "FLOAT16", "BFLOAT16"}
_INTS = {"INT32", "INT64"}
TRT_SUPPORTED_OPS: dict[str, set[str]] = {
    "Add": _FLOAT | _INTS,
    "ArgMin": _FLOAT | _INTS,
    "Cast": _FLOAT | _INTS | {"UINT8", "BOOL"},
    "Concat": _FLOAT | _INTS | {"BOOL"},
    "Constant": _FLOAT | _INTS | {"BOOL"},
    "Conv": _FLOAT,
    "ConvTranspose": _FLOAT,
    "Gather": _FLOAT | _INTS | {"BOOL"},
    "Identity": _FLOAT | _INTS | {"BOOL"},
    "MatMul": _FLOAT,
    "Mul": _FLOAT | _INTS,
    "Pad": _FLOAT | _INTS,
    "Relu": _FLOAT | _INTS,
    "Reshape": _FLOAT | _INTS | {"BOOL"},
    "Shape": _FLOAT | _INTS | {"BOOL"},
    "Slice": _FLOAT | _INTS | {"BOOL"},
    "Squeeze": _FLOAT | _INTS | {"BOOL"},
    "Sub": _FLOAT | _INTS,
    "Transpose": _FLOAT | _INTS | {"BOOL"},
    "Unsqueeze": _FLOAT | _INTS | {"BOOL"},
}


def unsupported_by_tensorrt(path: str | Path) -> list[str]:
    """What in the graph TensorRT 10 cannot parse: its opset, or nodes (op and first-input type) off the list."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    problems = [
        f"opset {o.version}" for o in model.opset_import if o.domain in ("", "ai.onnx") and o.version not in TRT_OPSETS
    ]
    types = {value.name: value.type.tensor_type.elem_type for value in (*model.graph.input, *model.graph.value_info)}
    types |= {init.name: init.data_type for init in model.graph.initializer}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(f"{node.name}: {node.domain + '.' if node.domain else ''}{node.op_type}")
        elif node.input and node.input[0] in types:
            dtype = onnx.TensorProto.DataType.Name(types[node.input[0]])
            if dtype not in TRT_SUPPORTED_OPS[node.op_type]:
                problems.append(f"{node.name}: {node.op_type} on {dtype}")
    return problems


def build_bundle_engines(
    bundle: str | Path,
    *,
    cache_dir: str | Path | None = None,
    profiles: tuple[Profile, ...] | None = None,
    device: int = 0,
) -> dict[str, Path]:
    """Build (or find) one engine per stem from the bundle's fp16 graphs; returns stem → engine path."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if TRT_PRECISION not in manifest.models:
        raise ExportError(f"{bundle}: no {TRT_PRECISION} graphs to build TensorRT engines from (export with --fp16)")
    profiles = profiles or default_profiles(
        hop_length=manifest.hop_length, context_samples=manifest.context_samples, sample_rate=manifest.sample_rate
    )
    cache_dir = Path(cache_dir) if cache_dir is not None else bundle / ENGINE_DIR
    for name in manifest.models[TRT_PRECISION].values():
        problems = unsupported_by_tensorrt(bundle / name)
        if problems:
            raise ExportError(f"{name}: not supported by TensorRT 10: {', '.join(problems[:5])}")
    engines = {}
    for stem, name in manifest.models[TRT_PRECISION].items():
        key = engine_key(manifest.files[name], TRT_PRECISION, profiles, device)
        engines[stem] = find_engine(cache_dir, stem, key) or build_engine(bundle / name, cache_dir, stem, key)
    return engines
