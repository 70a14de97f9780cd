"""Exact chunking: the plan's arithmetic, the seam test against a whole-signal run, and the context itself."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from runtime_bundle import tiny_bundle

from unmix.runtime import Separator, read_manifest
from unmix.runtime.chunking import ChunkPlan
from unmix.train.config import TINY
from unmix.train.model import VQVAE


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.mark.parametrize("chunk,context", [(8, 408), (64, 408), (1000, 408), (441000, 91888)])
@pytest.mark.parametrize("length", [1, 7, 8, 9, 800, 1631, 1632, 1633, 5000, 2_000_003])
def test_plan_covers_the_signal_once_with_full_context(chunk, context, length):
    if length // chunk > 10_000:
        pytest.skip("too many windows to be worth walking")
    plan = ChunkPlan(chunk, context, hop=8)
    windows = plan.finish(0, length)
    padded = plan.padded_length(length)
    assert windows[0].keep_start == 0 and windows[-1].keep_stop == padded
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.keep_stop == after.keep_start  # contiguous, no gap, no overlap
    for window in windows:
        assert window.start % 8 == 0 and 0 <= window.start and window.stop <= padded
        assert window.stop - window.start == (plan.window_length if padded >= plan.window_length else padded)
        # Full context on both sides, except where the window meets the signal's own edge.
        assert window.keep_start - window.start >= context or window.start == 0
        assert window.stop - window.keep_stop >= context or window.stop == padded


def whole_signal(bundle, stem: str, audio: np.ndarray) -> np.ndarray:
    """The reference: each channel run once through the graph, zero-padded to a multiple of 8, cropped back.

    The graph is the one the runtime runs on the CPU: the exporter's offline-optimised copy.
    """
    graph = read_manifest(bundle).ort_optimized["fp32"][stem]
    session = ort.InferenceSession(str(bundle / graph), providers=["CPUExecutionProvider"])
    padded = np.zeros((-(-len(audio) // 8) * 8, audio.shape[1]), np.float32)
    padded[: len(audio)] = audio
    out = session.run(["stem"], {"mixture": np.ascontiguousarray(padded.T[:, None, :])})[0]
    return out[:, 0, : len(audio)].T


SEAM_CASES = [
    (length, chunk, items)
    for length in (1, 7, 9, 3001, 12_345)
    for chunk, items in ((8, 1), (8, 10), (200, 3), (408, 2), (1000, 4), (4096, 1))
    if length // chunk <= 400  # chunk 8 on long signals only adds engine calls, not cases
]


@pytest.mark.parametrize("length,chunk,items_per_call", SEAM_CASES)
def test_seams_chunked_equals_whole_signal(bundle, length, chunk, items_per_call):
    """Chunk lengths from one hop to several contexts (200 and 8 are shorter than the 408-sample context),
    with one channel of one window per engine call up to several windows × both channels."""
    audio = (0.3 * np.random.default_rng(length).standard_normal((length, 2))).astype(np.float32)
    window = chunk + 2 * read_manifest(bundle).context_samples
    separator = Separator.from_bundle(bundle, chunk=chunk, batch_samples=items_per_call * window, backend="ort")
    stems = separator.separate(audio, separator.sample_rate)
    for stem, output in stems.items():
        expected = whole_signal(bundle, stem, audio)
        assert output.shape == audio.shape
        scale = max(float(np.abs(expected).max()), 1e-3)
        np.testing.assert_allclose(output, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("items", [6, 4, 1])
def test_windows_are_batched_with_channels_as_items(bundle, items):
    """Chunks × channels go to the engine as batches of equal-length mono items, within the sample budget."""
    window = 256 + 2 * read_manifest(bundle).context_samples
    separator = Separator.from_bundle(bundle, chunk=256, batch_samples=items * window, backend="ort")
    shapes = []
    run = separator._engine.run
    separator._engine.run = lambda batch: shapes.append(batch.shape) or run(batch)
    audio = (0.3 * np.random.default_rng(0).standard_normal((8000, 2))).astype(np.float32)
    separator.separate(audio, separator.sample_rate)
    assert shapes[0] == (items, 1, window)  # 4 items: two stereo windows; 1: a channel at a time
    assert all(shape[1:] == (1, window) for shape in shapes)
    assert sum(shape[0] for shape in shapes) >= 2 * (8000 - window) // 256


@pytest.mark.parametrize("config", [TINY, replace(TINY, depth=5, dilation_growth_rate=2)], ids=["tiny", "tiny-d5g2"])
def test_context_covers_the_end_to_end_field(config):
    """context_samples (the manifest's) is at least the field of mixture → stem on either side, and tight.

    Measured through encoder and decoder without the argmin (which is piecewise constant, so it can only
    narrow the dependence) from the exact gradient, for output samples of every phase within a frame.
    The paper's config uses the same formula; its two halves are checked in test_receptive_field.py.
    """
    model = VQVAE(config).double()
    hop, context = config.hop_length, config.context_samples()
    half = context + 4 * hop
    length = 2 * half + 2 * hop
    audio = torch.randn(1, 1, length, dtype=torch.float64, requires_grad=True)
    output = model.decoder(model.encoder(audio))
    reach = 0
    for phase in range(hop):
        position = half + phase
        (grad,) = torch.autograd.grad(output[0, 0, position], audio, retain_graph=True)
        influence = grad[0, 0].nonzero().flatten()
        reach = max(reach, position - int(influence[0]), int(influence[-1]) - position)
    assert reach <= context < reach + 2 * hop
