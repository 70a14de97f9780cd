"""The OpenVINO backend on a bundle's int8 graphs (exported here with unmix.export: not part of the lean run)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from runtime_bundle import STEMS

from unmix.runtime import Separator
from unmix.runtime.chunking import default_chunk
from unmix.runtime.manifest import read_manifest

ov = pytest.importorskip("openvino")

from unmix.runtime import openvino_backend  # noqa: E402  (after the skip: it needs openvino)
from unmix.runtime.openvino_streaming import stream_graph  # noqa: E402


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """A tiny bundle with int8 graphs (static QDQ, as `unmix-export --int8` writes them)."""
    from tiny_models import tiny_separator

    from unmix.export import export_bundle
    from unmix.export.audio import synthetic_audio
    from unmix.train.config import TINY

    calibration = [(0.3 * np.random.default_rng(seed).standard_normal(4096)).astype(np.float32) for seed in range(4)]
    return export_bundle(
        {stem: tiny_separator(seed) for seed, stem in enumerate(STEMS, start=1)},
        tmp_path_factory.mktemp("int8") / "bundle",
        provenance={"source": "tests/test_runtime_openvino_int8.py: random TINY separators"},
        parity_audio=synthetic_audio(TINY.sample_rate, TINY.hop_length, segments=1, seconds=0.5),
        int8_calibration=calibration,
        ort_optimized=False,
        force=True,  # random weights: the SDR gate says nothing here
    )


def test_int8_graphs_run_on_openvino_as_onnx_runtime_runs_them(int8_bundle):
    manifest = read_manifest(int8_bundle)
    for stem in STEMS:  # the transposed convolutions' dequantized weights are folded into phase convolutions
        decoder = openvino_backend.split_stem_graph(int8_bundle / manifest.models["int8"][stem]).decoder
        kinds = {op.get_type_name() for op in decoder.get_ops()}
        assert "ConvolutionBackpropData" not in kinds and "FakeQuantize" in kinds
    audio = (0.3 * np.random.default_rng(4).standard_normal((20_000, 2))).astype(np.float32)
    options = {"chunk": 4096, "threads": 1, "precision": "int8", "refine": False}
    on_ort = Separator.from_bundle(int8_bundle, backend="ort", **options).separate(audio, 44100)
    on_openvino = Separator.from_bundle(int8_bundle, backend="openvino", **options)
    assert on_openvino._engine.description.endswith("int8") and not on_openvino.stateful
    fp32 = Separator.from_bundle(int8_bundle, backend="ort", **(options | {"precision": "fp32"})).separate(audio, 44100)
    for stem, out in on_openvino.separate(audio, 44100).items():
        # the two runtimes round int8 differently: both as close to each other as int8 comes to fp32, or closer
        assert snr(out, on_ort[stem]) > min(snr(on_ort[stem], fp32[stem]), snr(out, fp32[stem])) - 6
        assert snr(out, fp32[stem]) > 10


def snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """In dB; equal arrays score 300 dB."""
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((estimate - reference) ** 2), 1e-30)))


@pytest.mark.skipif(openvino_backend.native_bf16(), reason="this CPU computes bf16 natively: bf16 is the default")
def test_auto_precision_is_int8_only_where_the_bundle_says_its_int8_passed_the_gate(int8_bundle, tmp_path):
    for passed, expected in ((["fp32", "int8"], "int8"), (["fp32"], "fp32"), (None, "fp32")):
        bundle = shutil.copytree(int8_bundle, tmp_path / f"{expected}-{passed is None}")
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["provenance"]["export"].pop("passed_gate")
        if passed is not None:  # else as bundles exported before the gate was recorded
            manifest["provenance"]["export"]["passed_gate"] = passed
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        separator = Separator.from_bundle(bundle, backend="auto", refine=False, threads=1)
        assert separator._engine.description.endswith(expected)
        facts = read_manifest(bundle)  # int8 runs in stages, on windows half as long as fp32's (less memory)
        assert separator._plan.chunk == default_chunk("openvino", facts.sample_rate, facts.hop_length, expected)
    assert default_chunk("openvino", 44100, 8, "int8") < default_chunk("openvino", 44100, 8, "fp32")


def test_the_stream_models_keep_every_int8_convolution_of_the_int8_graphs(int8_bundle):
    """OpenVINO runs a convolution on its int8 kernels only when a dequantization comes right before it: the stateful
    rewrite keeps the history ahead of the quantization and applies it again (else they ran in fp32, slower)."""
    manifest = read_manifest(int8_bundle)
    core = ov.Core()

    def int8_convolutions(model) -> int:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        layers = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()]
        return sum(
            info["layerType"].astype(str) == "Convolution" and info["runtimePrecision"].astype(str) in ("u8", "i8")
            for info in layers
        )

    parts = openvino_backend.split_stem_graph(int8_bundle / manifest.models["int8"][STEMS[0]])
    block = 64 * manifest.hop_length
    for part, shape in ((parts.encoder, [1, 1, block]), (parts.decoder, [1, 1, 64])):
        whole = part.clone()
        whole.reshape({0: shape})
        expected = int8_convolutions(whole)
        stream = stream_graph(part, [shape])
        assert expected > 0
        assert int8_convolutions(stream.plain) == int8_convolutions(stream.masked) == expected


def test_an_int8_stream_computes_what_the_int8_stages_compute(int8_bundle):
    """The stateful models built from the int8 graphs (what `auto` streams on where int8 is the default): the same
    stems as the stages to int8's rounding (the kernels differ between the two; fp32 is exact, see the cascade
    tests)."""
    audio = (0.3 * np.random.default_rng(5).standard_normal((20_000, 2))).astype(np.float32)
    options = {"backend": "openvino", "precision": "int8", "refine": False, "threads": 1}
    stages = Separator.from_bundle(int8_bundle, stateful=False, **options).separate(audio, 44100)
    stream = Separator.from_bundle(int8_bundle, **options).stream(44100, 2, low_latency=True)
    blocks = [stream.feed(audio[start : start + 4410]) for start in range(0, len(audio), 4410)] + [stream.finish()]
    for stem, expected in stages.items():
        streamed = np.concatenate([block[stem] for block in blocks])
        assert streamed.shape == expected.shape and snr(streamed, expected) > 30
