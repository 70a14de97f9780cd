"""The OpenVINO backend: the same numbers as ONNX Runtime in fp32, the graph cut and rewrites, bf16, and choices."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from runtime_bundle import STEMS, tiny_bundle, tiny_openvino_engine

from unmix.runtime import BackendError, Separator
from unmix.runtime.backends import resolve_backend
from unmix.runtime.engines import Device
from unmix.runtime.manifest import read_manifest

ov = pytest.importorskip("openvino")

from unmix.runtime import openvino_backend  # noqa: E402  (after the skip: it needs openvino)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def mono(frames: int, seed: int = 0) -> np.ndarray:
    """(2, 1, frames) of noise: two batch items."""
    return (0.3 * np.random.default_rng(seed).standard_normal((2, 1, frames))).astype(np.float32)


def ort_outputs(path, batch):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["stem", "codes"], {"mixture": batch})


def test_fp32_engine_computes_what_onnx_runtime_computes(bundle, tmp_path_factory):
    engine = tiny_openvino_engine(tmp_path_factory)
    batch = mono(4096)
    outputs = engine.run(batch)
    assert list(outputs) == list(STEMS)
    for stem in STEMS:
        expected, _ = ort_outputs(bundle / f"{stem}.onnx", batch)
        assert outputs[stem].shape == expected.shape == batch.shape
        np.testing.assert_allclose(outputs[stem], expected, atol=1e-5 * np.abs(expected).max())


def test_the_cut_rewrites_every_transposed_convolution_and_keeps_the_codes(bundle):
    parts = openvino_backend.split_stem_graph(bundle / "bass.onnx")
    assert "ConvolutionBackpropData" not in {op.get_type_name() for op in parts.decoder.get_ops()}
    core = ov.Core()
    encoder = core.compile_model(parts.encoder, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    nearest = core.compile_model(openvino_backend.nearest_code_model(parts), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    batch = mono(2048, seed=1)
    embeddings = encoder({0: batch})[0]
    found = nearest({0: embeddings})[0]
    _, codes = ort_outputs(bundle / "bass.onnx", batch)  # the graph's own codes
    np.testing.assert_array_equal(found[:, 0], codes)
    # the cut decoder looks them up in the codebook and decodes what the whole graph decodes
    decoder = core.compile_model(parts.decoder, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected, _ = ort_outputs(bundle / "bass.onnx", batch)
    np.testing.assert_allclose(decoder({0: found})[0], expected, atol=1e-5 * np.abs(expected).max())


def test_nearest_code_takes_the_first_of_tied_codes_as_argmin_does():
    codebook = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)  # codes 1 and 2 tie
    parts = openvino_backend.StemParts(
        encoder=None, codebook_t=codebook.T.copy(), code_norms=(codebook**2).sum(1), scale=np.float32(2), decoder=None
    )
    nearest = ov.Core().compile_model(
        openvino_backend.nearest_code_model(parts), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    embeddings = np.array([[[0.9, 0.1, -2.0], [0.1, 0.8, 0.1]]], np.float32)  # (1, C=2, T'=3)
    found = nearest({0: embeddings})[0]
    distances = ((embeddings[0].T[:, None, :] - codebook[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(found[0, 0], distances.argmin(1))
    assert found[0, 0, 1] == 1


@pytest.mark.skipif(not openvino_backend.native_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_stays_close_to_fp32(bundle):
    paths = {"vocals": bundle / "vocals.onnx"}
    manifest = read_manifest(bundle)
    batch = mono(8192, seed=2)
    exact = openvino_backend.OpenVinoEngine(paths, manifest, threads=1, precision="fp32").run(batch)["vocals"]
    rounded = openvino_backend.OpenVinoEngine(paths, manifest, threads=1, precision="bf16").run(batch)["vocals"]
    snr = 10 * np.log10((exact**2).sum() / ((rounded - exact) ** 2).sum())
    assert 15 < snr < 120  # bfloat16 arithmetic, not fp32 under another name


def test_separator_on_openvino_matches_onnx_runtime(bundle):
    audio = (0.3 * np.random.default_rng(3).standard_normal((3000, 2))).astype(np.float32)
    kwargs = {"chunk": 512, "threads": 1, "precision": "fp32"}
    on_ort = Separator.from_bundle(bundle, backend="ort", **kwargs).separate(audio, 44100)
    on_openvino = Separator.from_bundle(bundle, backend="openvino", **kwargs)
    assert on_openvino._engine.description.startswith("openvino")
    for stem, expected in on_openvino.separate(audio, 44100).items():
        np.testing.assert_allclose(expected, on_ort[stem], atol=1e-5 * np.abs(on_ort[stem]).max())


def test_auto_picks_openvino_on_the_cpu_for_the_precisions_it_runs():
    cpu = Device("cpu")
    assert resolve_backend("auto", cpu, "fp32") == "openvino"
    assert resolve_backend("auto", cpu, "auto") == "openvino"
    assert resolve_backend("auto", cpu, "int8") == "openvino"  # the bundle's int8 (QDQ) graphs run there too
    assert resolve_backend("auto", Device("cuda")) == "ort"
    assert resolve_backend("ort", cpu) == "ort"


@pytest.mark.parametrize(
    "options,words",
    [
        ({"backend": "ort", "precision": "bf16"}, "bf16 runs on the openvino backend"),
        ({"backend": "openvino", "device": "cuda"}, "runs on the CPU"),
        ({"backend": "openvino", "precision": "double"}, "unknown precision"),
        ({"backend": "openvino", "threads": 0}, "at least 1"),
    ],
)
def test_what_openvino_cannot_do_is_a_clear_error(bundle, options, words):
    with pytest.raises(BackendError, match=words):
        Separator.from_bundle(bundle, **options)
