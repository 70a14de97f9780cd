"""The Separator API: options, stems, channels, rates, streaming, progress, cancellation and bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading

import numpy as np
import onnxruntime as ort
import pytest
import soxr
from runtime_bundle import STEMS, tiny_bundle

from unmix.runtime import AudioError, BackendError, BundleError, Cancelled, Separator
from unmix.runtime import separator as separator_module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def separator(bundle):
    return Separator.from_bundle(bundle, chunk=512, batch_samples=2 * (512 + 2 * 408), threads=1)  # a window a call


def noise(frames: int, channels: int | None = 2, seed: int = 0) -> np.ndarray:
    shape = (frames,) if channels is None else (frames, channels)
    return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_only_the_chosen_stems_are_loaded_and_computed(bundle):
    separator = Separator.from_bundle(bundle, stems=["vocals"], chunk=512, backend="ort")
    assert separator.stems == ("vocals",)
    assert list(separator._engine.sessions) == ["vocals"]  # the bass graph is never even loaded
    assert list(separator.separate(noise(1000), 44100)) == ["vocals"]


def test_cpu_runs_the_offline_optimised_copies_which_match_the_plain_graphs(bundle):
    separator = Separator.from_bundle(bundle, stems=["bass"], backend="ort")
    assert separator._engine.sessions["bass"]._model_path.endswith("bass.ort-extended.onnx")
    plain = ort.InferenceSession(str(bundle / "bass.onnx"), providers=["CPUExecutionProvider"])
    audio = noise(4000, 2)
    expected = plain.run(["stem"], {"mixture": np.ascontiguousarray(audio.T[:, None, :])})[0][:, 0].T  # 4000 = 500 hops
    np.testing.assert_allclose(separator.separate(audio, 44100)["bass"], expected, atol=1e-5)


def test_stems_keep_the_callers_order(bundle):
    assert Separator.from_bundle(bundle, stems=["vocals", "bass", "vocals"]).stems == ("vocals", "bass")


@pytest.mark.parametrize(
    "options,error,words",
    [
        ({"stems": ["drums"]}, BundleError, "no stem 'drums'"),
        ({"precision": "int8"}, BackendError, "no int8 models"),
        ({"backend": "tensorflow"}, BackendError, "unknown backend"),
        ({"device": "tpu"}, BackendError, "unknown device"),
        ({"device": "cpu", "backend": "trt"}, BackendError, "needs a GPU"),
        ({"threads": 0}, BackendError, "at least 1"),
        ({"chunk": 1001}, ValueError, "multiple of the hop"),
    ],
)
def test_unavailable_options_are_clear_errors(bundle, options, error, words):
    with pytest.raises(error, match=words):
        Separator.from_bundle(bundle, **options)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_cuda_without_a_cuda_build_is_an_error_not_a_fallback(bundle):
    with pytest.raises(BackendError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        Separator.from_bundle(bundle, device="cuda:0")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_without_tensorrt_is_an_error_naming_the_install(bundle):
    with pytest.raises(BackendError, match=r"TensorRT is not installed: pip install 'unmix\[trt\]'"):
        Separator.from_bundle(bundle, device="cuda", backend="trt")


def test_a_tampered_bundle_is_refused(bundle, tmp_path):
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    with open(copy / "bass.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        Separator.from_bundle(copy)


def test_default_bundle(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(separator_module, "DEFAULT_BUNDLE", tmp_path / "bundles" / "default")
    with pytest.raises(BundleError, match="no default model is installed"):
        Separator.from_bundle("default")
    shutil.copytree(bundle, tmp_path / "bundles" / "default")
    assert Separator.from_bundle("default").stems == STEMS


@pytest.mark.parametrize("shape", [(999,), (999, 1), (999, 2), (999, 5), (999, 8)])
def test_outputs_have_the_input_shape_and_channels_are_independent(separator, shape):
    audio = noise(999, None if len(shape) == 1 else shape[1])
    stems = separator.separate(audio, 44100)
    assert {stem: out.shape for stem, out in stems.items()} == {stem: shape for stem in STEMS}
    assert all(out.dtype == np.float32 for out in stems.values())
    columns = audio.reshape(999, -1)
    for channel in range(columns.shape[1]):  # each channel as if it were alone
        alone = separator.separate(columns[:, channel], 44100)
        for stem in STEMS:
            np.testing.assert_allclose(stems[stem].reshape(999, -1)[:, channel], alone[stem], atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000, 192000])
def test_other_rates_are_resampled_in_and_back(separator, rate):
    audio = noise(rate // 10, 2, seed=rate)
    stems = separator.separate(audio, rate)
    assert stems["bass"].shape == audio.shape
    # Reference: resample the whole signal to the model rate, separate, resample back, same length.
    at_model_rate = soxr.resample(audio, rate, separator.sample_rate)
    expected = soxr.resample(
        separator.separate(at_model_rate, separator.sample_rate)["bass"], separator.sample_rate, rate
    )
    expected = np.pad(expected, ((0, max(0, len(audio) - len(expected))), (0, 0)))[: len(audio)]
    np.testing.assert_allclose(stems["bass"], expected, atol=1e-5)


@pytest.mark.parametrize("frames", [1, 2, 7, 8, 9])
@pytest.mark.parametrize("rate", [44100, 8000, 192000])
def test_any_length_from_one_sample(separator, frames, rate):
    stems = separator.separate(noise(frames, 2), rate)
    assert all(out.shape == (frames, 2) and np.isfinite(out).all() for out in stems.values())


def test_silence_gives_silent_stems(separator):
    stems = separator.separate(np.zeros((20_000, 2), np.float32), 48000)
    assert all(not out.any() for out in stems.values())


def test_a_silent_channel_stays_silent(separator):
    audio = noise(5000, 2)
    audio[:, 1] = 0
    stems = separator.separate(audio, 44100)
    assert all(not out[:, 1].any() and out[:, 0].any() for out in stems.values())


@pytest.mark.parametrize("value,name", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_samples_are_named_with_their_position(bundle, value, name):
    audio = noise(300_000, 2)
    audio[270_000, 1] = value  # in the second block the array is fed in
    separator = Separator.from_bundle(bundle, chunk=1 << 16)
    with pytest.raises(AudioError, match=rf"non-finite sample \({name}\) at frame 270000 \(6\.122 s\), channel 2"):
        separator.separate(audio, 44100)


@pytest.mark.parametrize(
    "audio,words",
    [
        (np.zeros((0, 2), np.float32), "zero-length"),
        (np.zeros(0, np.float32), "zero-length"),
        (np.zeros((10, 2), np.int16), "floating point"),
        (np.zeros((10, 2, 2), np.float32), "shape"),
        (np.zeros((2, 100_000), np.float32), r"channels, frames\)\? pass \(frames, channels\)"),
    ],
)
def test_bad_arrays_are_clear_errors(separator, audio, words):
    with pytest.raises(AudioError, match=words):
        separator.separate(audio, 44100)


def test_bad_sample_rate(separator):
    with pytest.raises(AudioError, match="sample rate"):
        separator.separate(noise(100), 0)


def test_stream_in_uneven_blocks_equals_one_call(bundle):
    """Blocks of any size, resampled on the fly; output flows once a batch of windows is ready."""
    separator = Separator.from_bundle(bundle, chunk=512, batch_samples=2 * (512 + 2 * 408))
    audio = noise(30_000, 2, seed=3)
    whole = separator.separate(audio, 48000)
    stream = separator.stream(48000, 2)
    parts, position = [], 0
    for size in [1, 7, 5000, 333, 0, 12_000, 30_000]:
        parts.append(stream.feed(audio[position : position + size]))
        position += size
    parts.append(stream.finish())
    for stem in STEMS:
        np.testing.assert_array_equal(np.concatenate([p[stem] for p in parts]), whole[stem])
    assert sum(len(p["bass"]) for p in parts[:-1]) > 0  # output flowed before the end


def test_progress_reports_frames_up_to_the_total(separator):
    calls = []
    separator.separate(noise(20_000, 2), 32000, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 3 and calls[-1] == (20_000, 20_000)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize("kind", ["callable", "event"])
def test_cancel_stops_between_chunks(separator, kind):
    calls = []
    event = threading.Event()

    def progress(done, total):
        calls.append(done)
        event.set()

    cancel = event if kind == "event" else event.is_set
    with pytest.raises(Cancelled):
        separator.separate(noise(40_000, 2), 44100, progress=progress, cancel=cancel)
    assert len(calls) == 1  # stopped right after the first chunk


def test_manifest_facts_drive_the_plan(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    separator = Separator.from_bundle(bundle, backend="ort")
    assert separator._plan.context == manifest["context_samples"] == 408
    assert separator._plan.chunk == 20 * 44100  # the default: 20 s at the model's rate
    if importlib.util.find_spec("openvino"):
        chunk = Separator.from_bundle(bundle, backend="openvino")._plan.chunk  # stages: shorter windows
        assert chunk == 27563 * 8 and abs(chunk - 5 * 44100) <= 8  # 5 s as an odd number of hops
