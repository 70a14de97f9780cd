"""Streaming step graphs (cached convolutions): the concatenated stream equals the stateless graph, start to end."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tiny_models import tiny_separator

from unmix.export.graph import StemGraph
from unmix.export.onnx_export import export_onnx
from unmix.export.streaming import (
    LIMITS_NAME,
    StreamingStemGraph,
    export_streaming_graph,
    measure_delay,
    separator_from_graph,
)
from unmix.runtime.manifest import OUTPUT_NAME
from unmix.runtime.streaming import CachedLayer, StreamLayout
from unmix.train.config import TINY

HOP = TINY.hop_length


@pytest.fixture(scope="module")
def separator():
    return tiny_separator(3).eval()


@pytest.fixture(scope="module")
def graph(separator):
    streaming = StreamingStemGraph(separator).eval()
    streaming.delay = measure_delay(streaming, HOP, 512)
    return streaming


def layers_of(graph: StreamingStemGraph) -> list[CachedLayer]:
    return graph.state_specs()


def stream(step, layers: list[CachedLayer], signal: np.ndarray, block: int, delay: int) -> np.ndarray:
    """`signal` (1, 1, T) through `step(block, limits, states) → (out, states)` in blocks of `block` samples after a
    first call of the delay plus one block; then zeros until the output reaches the padded end. (1, 1, T)."""
    length = signal.shape[-1]
    padded = -(-length // HOP) * HOP
    source = np.pad(signal, ((0, 0), (0, 0), (0, padded - length)))
    layout = StreamLayout(layers)
    states = layout.initial_states(1)
    first = -(-delay // HOP) * HOP + block
    outputs, position, produced = [], 0, 0
    while produced < padded:
        size = first if position == 0 else block
        piece = source[..., position : position + size]
        end = padded if position + size >= padded else None  # the end is known once the last samples are fed
        piece = np.pad(piece, ((0, 0), (0, 0), (0, size - piece.shape[-1])))
        limits, count = layout.advance(size, end)
        out, states = step(piece, limits, states)
        assert out.shape[-1] == count  # the host follows every layer exactly
        outputs.append(out)
        produced += count
        position += size
    return np.concatenate(outputs, axis=-1)[..., :length]


def torch_step(graph):
    def step(block, limits, states):
        with torch.no_grad():
            out, *following = graph(torch.from_numpy(block), torch.from_numpy(limits), *map(torch.from_numpy, states))
        return out.numpy(), [state.numpy() for state in following]

    return step


def whole(separator, signal: np.ndarray) -> np.ndarray:
    padded = -(-signal.shape[-1] // HOP) * HOP
    with torch.no_grad():
        out = StemGraph(separator).eval()(
            torch.from_numpy(np.pad(signal, ((0, 0), (0, 0), (0, padded - signal.shape[-1]))))
        )
    return out[0].numpy()[..., : signal.shape[-1]]


@pytest.mark.parametrize("length", [5, 400, 1001, 4096, 6007])
@pytest.mark.parametrize("block", [HOP, 96, 1024])
def test_the_stream_equals_the_whole_signal_graph_at_both_edges(separator, graph, length, block):
    signal = (0.3 * np.random.default_rng(length).standard_normal((1, 1, length))).astype(np.float32)
    streamed = stream(torch_step(graph), layers_of(graph), signal, block, graph.delay)
    np.testing.assert_allclose(streamed, whole(separator, signal), rtol=0, atol=1e-5)


def test_the_delay_is_the_receptive_field_and_the_first_call_needs_it(graph):
    # one side of the receptive field, give or take the frames a strided layer rounds to
    assert abs(graph.delay - TINY.encoder_receptive_field() // 2 * 2) < 8 * HOP
    layout = StreamLayout(layers_of(graph))
    assert layout.minimum_call() <= graph.delay + HOP
    _, count = layout.advance(-(-graph.delay // HOP) * HOP + 64)
    assert 64 <= count < 64 + HOP


def test_the_onnx_streaming_graph_runs_on_onnx_runtime_and_matches(separator, graph, tmp_path):
    path = export_streaming_graph(graph, tmp_path / "stream.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]
    assert names[:2] == ["mixture", LIMITS_NAME] and len(names) == 2 + len(graph.state_specs())

    def step(block, limits, states):
        out, *following = session.run(None, dict(zip(names, [block, limits, *states], strict=False)))
        return out, following

    signal = (0.3 * np.random.default_rng(7).standard_normal((1, 1, 3333))).astype(np.float32)
    streamed = stream(step, layers_of(graph), signal, 256, graph.delay)
    np.testing.assert_allclose(streamed, whole(separator, signal), rtol=0, atol=1e-5)


def test_a_stateless_graph_gives_back_its_separator(separator, tmp_path):
    path = export_onnx(
        StemGraph(separator),
        tmp_path / "stem.onnx",
        [OUTPUT_NAME, "codes"],
        hop_length=HOP,
        metadata={"unmix.config": TINY.to_dict()},
    )
    rebuilt = separator_from_graph(path)
    signal = (0.3 * np.random.default_rng(8).standard_normal((1, 1, 2048))).astype(np.float32)
    np.testing.assert_allclose(whole(rebuilt, signal), whole(separator, signal), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="not an unmix stem graph"):
        separator_from_graph(export_onnx(StemGraph(separator), tmp_path / "bare.onnx", [OUTPUT_NAME], hop_length=HOP))
