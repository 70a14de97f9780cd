"""The TensorRT path as far as a CPU machine can check it: operator support, engine-cache keys, clear errors.

Building and running engines needs an NVIDIA GPU and TensorRT; that code is untested (see
runtime/engine_cache.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from test_export_bundle import QUICK_AUDIO, tiny_separator
from typer.testing import CliRunner

from unmix.export import export_bundle
from unmix.export.cli import app
from unmix.export.tensorrt_engines import TRT_SUPPORTED_OPS, unsupported_by_tensorrt
from unmix.runtime.chunking import default_chunk
from unmix.runtime.engine_cache import (
    INSTALL_HINT,
    EngineCacheError,
    EngineKey,
    default_profiles,
    engine_path,
    find_engine,
    gpu_info,
    import_tensorrt,
)
from unmix.runtime.manifest import read_manifest
from unmix.train.config import PAPER

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory):
    """Every graph kind TensorRT may be given: fp32 and fp16 per stem, and the fused graphs."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trt") / "bundle"
    separators = {"drums": tiny_separator(81), "vocals": tiny_separator(82)}
    export_bundle(separators, out, parity_audio=QUICK_AUDIO, fp16=True, fused=True, ort_optimized=False)
    return out


def test_every_graph_for_tensorrt_uses_only_supported_ops(gpu_bundle):
    manifest = read_manifest(gpu_bundle)
    graphs = [*manifest.models["fp32"].values(), *manifest.models["fp16"].values(), *manifest.fused.values()]
    assert len(graphs) == 6
    for name in graphs:
        assert unsupported_by_tensorrt(gpu_bundle / name) == [], name


def test_the_op_check_catches_what_tensorrt_lacks(tmp_path):
    """An int8 QDQ graph (asymmetric zero points) and a ReduceMin + ArgMin bottleneck are flagged."""
    node = helper.make_node("ReduceMin", ["x"], ["y"], name="paper_min", keepdims=0)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert unsupported_by_tensorrt(tmp_path / "m.onnx") == ["paper_min: ReduceMin"]
    assert "QuantizeLinear" not in TRT_SUPPORTED_OPS and "ArgMin" in TRT_SUPPORTED_OPS


def key(**changes) -> EngineKey:
    profiles = default_profiles(hop_length=8, context_samples=PAPER.context_samples(), sample_rate=44100)
    base = EngineKey("ab" * 32, "NVIDIA H100 80GB HBM3", "9.0", "10.8.0.43", "fp16", profiles)
    return dataclasses.replace(base, **changes)


def test_engine_key_changes_with_everything_an_engine_depends_on():
    changes = [
        {"onnx_sha256": "cd" * 32},
        {"gpu_name": "NVIDIA A100-SXM4-80GB"},
        {"compute_capability": "8.0"},
        {"tensorrt_version": "10.9.0.34"},
        {"precision": "fp32"},
        {"profiles": (dataclasses.replace(key().profiles[0], max=(8, 1, 8)),)},
        {"tf32": True},
        {"optimization_level": 5},
    ]
    digests = {key().digest()} | {key(**change).digest() for change in changes}
    assert len(digests) == len(changes) + 1
    assert key().file_stem("vocals").startswith("vocals-abababab-sm90-trt10.8.0.43-fp16-")


def test_the_default_profile_covers_the_offline_windows():
    context = PAPER.context_samples()
    (offline,) = default_profiles(hop_length=8, context_samples=context, sample_rate=44100)
    assert offline.opt == offline.max == (16, 1, 882000 + 2 * context) and offline.min == (1, 1, 8)
    assert all(shape[2] % 8 == 0 for shape in (offline.min, offline.max))
    # the windows the separator runs on TensorRT by default: one default chunk for both
    assert offline.max[2] == default_chunk("trt", 44100, 8) + 2 * context


def test_a_cached_engine_is_used_only_under_its_exact_key(tmp_path):
    wanted = key()
    plan = engine_path(tmp_path, "vocals", wanted)
    assert find_engine(tmp_path, "vocals", wanted) is None
    plan.write_bytes(b"serialized engine")
    assert find_engine(tmp_path, "vocals", wanted) is None, "an engine without its sidecar is not trusted"
    plan.with_suffix(".json").write_text(json.dumps({"key": wanted.to_dict()}))
    assert find_engine(tmp_path, "vocals", wanted) == plan
    for stale in (key(tensorrt_version="10.9.0.34"), key(gpu_name="NVIDIA L4", compute_capability="8.9")):
        assert find_engine(tmp_path, "vocals", stale) is None
    # The right file name but another key recorded beside it (an edited or mixed-up cache): refused.
    plan.with_suffix(".json").write_text(json.dumps({"key": key(tf32=True).to_dict()}))
    assert find_engine(tmp_path, "vocals", wanted) is None
    plan.with_suffix(".json").write_text("{not json")
    assert find_engine(tmp_path, "vocals", wanted) is None


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_clear_line(tmp_path):
    with pytest.raises(EngineCacheError, match="TensorRT is not installed: pip install 'unmix\\[trt\\]'"):
        import_tensorrt()
    result = CliRunner().invoke(
        app, ["--stem", "bass", "--checkpoint", str(tmp_path), "--trt", "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 2 and INSTALL_HINT in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_missing_driver_is_named(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EngineCacheError, match="no NVIDIA driver found"):
        gpu_info()


def test_engine_cache_needs_no_torch():
    code = "import sys, unmix.runtime.engine_cache; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
