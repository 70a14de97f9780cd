"""Stateful OpenVINO streams: each sample computed once, the output equal to the whole-signal graphs'."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_bundle import STEMS, tiny_openvino_engine

from unmix.runtime.manifest import read_manifest

ov = pytest.importorskip("openvino")

from unmix.runtime.openvino_streaming import stream_graph  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_openvino_engine(tmp_path_factory)


def streamed(run, x: np.ndarray, feed: int) -> list[np.ndarray]:
    parts = [run.feed([x[:, :, i : i + feed]]) for i in range(0, x.shape[2], feed)] + [run.finish()]
    return [np.concatenate([part[k] for part in parts if part], axis=2) for k in range(len(STEMS))]


@pytest.mark.parametrize(
    "items,block,feed,length",
    [(1, 8, 8, 1000), (1, 8, 3, 296), (2, 64, 100, 3000), (1, 1000, 37, 3000), (2, 2048, 5000, 4096), (1, 512, 8, 64)],
)
def test_a_stateful_stream_computes_what_the_whole_graph_computes(engine, items, block, feed, length):
    """Blocks of one hop and longer than the signal, feeds of any size, signals shorter than the look-ahead."""
    x = (0.3 * np.random.default_rng(length).standard_normal((items, 1, length))).astype(np.float32)
    outputs = streamed(engine.stateful_run(items, block), x, feed)
    expected = engine.run(x)
    for stem, output in zip(engine.stems, outputs, strict=True):
        assert output.shape == x.shape
        np.testing.assert_allclose(output, expected[stem], rtol=0, atol=1e-5 * np.abs(expected[stem]).max())


def test_streams_keep_their_own_state(engine):
    """Two streams on the same compiled models, fed in turns, each give what it gives alone."""
    rng = np.random.default_rng(9)
    signals = [(0.3 * rng.standard_normal((1, 1, 2000))).astype(np.float32) for _ in range(2)]
    runs = [engine.stateful_run(1, 64), engine.stateful_run(1, 64)]
    parts: list[list[list[np.ndarray]]] = [[], []]
    for first in range(0, 2000, 120):
        for run, signal, kept in zip(runs, signals, parts, strict=True):
            kept.append(run.feed([signal[:, :, first : first + 120]]))
    for run, kept in zip(runs, parts, strict=True):
        kept.append(run.finish())
    for signal, kept in zip(signals, parts, strict=True):
        expected = engine.run(signal)
        for index, stem in enumerate(engine.stems):
            output = np.concatenate([part[index] for part in kept if part], axis=2)
            np.testing.assert_allclose(output, expected[stem], rtol=0, atol=1e-5 * np.abs(expected[stem]).max())


def test_the_plain_model_runs_between_the_edges_and_each_frame_once(engine):
    """Masks only where a call touches the signal's edges; every convolution gets a call's frames at its rate (no
    recomputed context); the output trails the input by the model's look-ahead, within its receptive field."""
    encoders, _ = engine._joined_models()
    block = 64
    graph = stream_graph(encoders, [[1, 1, block]])
    layout = graph.layout
    assert layout.bounds(0, None) is not None  # the first call's layers start before the signal
    steady = next(call for call in range(1000) if layout.bounds(call, None) is None)
    assert all(layout.bounds(call, None) is None for call in range(steady, steady + 50))
    lengths = layout.input_lengths(100 * block)
    assert layout.bounds(99, lengths) is None and layout.bounds(100, lengths) is not None  # the input ends at 100
    rates = {grid.frames / block for grid in layout.grids}
    assert rates == {1, 1 / 2, 1 / 4, 1 / 8}  # the tiny model's three strided convolutions
    run = engine.stateful_run(1, block)
    reach = read_manifest(engine._paths[STEMS[0]].parent).context_samples
    assert 0 < run.delay - (block - 1) <= reach


def test_streams_in_several_threads_compute_what_each_computes_alone(engine):
    """One engine, four streams fed at once from four threads: each equals its whole-signal graph."""
    import threading

    rng = np.random.default_rng(11)
    signals = [(0.3 * rng.standard_normal((1, 1, 1504 + 256 * k))).astype(np.float32) for k in range(4)]
    results: dict[int, list[np.ndarray]] = {}

    def run(index: int) -> None:
        results[index] = streamed(engine.stateful_run(1, 128), signals[index], 96)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, signal in enumerate(signals):
        expected = engine.run(signal)
        for stem, output in zip(engine.stems, results[index], strict=True):
            np.testing.assert_allclose(output, expected[stem], rtol=0, atol=1e-5 * np.abs(expected[stem]).max())
