"""Overlap-save in stages: a cascade's output equals a whole-signal run, whatever the chunk and the blocks fed."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from runtime_bundle import STEMS, tiny_bundle, tiny_openvino_engine

from unmix.runtime.cascade import CascadeRun, Stage
from unmix.runtime.manifest import STEMS as ALL_STEMS


def convolve(x: np.ndarray, taps: np.ndarray, *, stride: int = 1, dilation: int = 1) -> np.ndarray:
    """A zero-padded 'same' convolution of (items, 1, frames), as the graphs' convolutions pad, then strided."""
    span = (len(taps) - 1) * dilation
    padded = np.pad(x, ((0, 0), (0, 0), (span // 2, span - span // 2)))
    out = sum(tap * padded[:, :, i * dilation : i * dilation + x.shape[2]] for i, tap in enumerate(taps))
    return np.tanh(out[:, :, ::stride])  # a nonlinearity, so no stage is a shift of another


def upsample(x: np.ndarray) -> np.ndarray:
    return convolve(np.repeat(x, 2, axis=2), np.array([0.3, 0.5, 0.2]))


TOY_STAGES = [  # (function, context in input frames, rate)
    (lambda xs: [convolve(xs[0], np.array([0.2, -0.5, 1.0, 0.4, 0.1]), dilation=3)], 6, Fraction(1)),
    (lambda xs: [convolve(xs[0], np.array([0.5, 1.0, -0.3, 0.2]), stride=2)], 2, Fraction(1, 2)),
    (lambda xs: [xs[0] * np.abs(xs[0])], 0, Fraction(1)),  # pointwise, as the nearest-code search is
    (lambda xs: [convolve(xs[0], np.array([1.0, 0.7, -0.2]), dilation=9)], 9, Fraction(1)),
    (lambda xs: [upsample(xs[0])], 2, Fraction(2)),
]


def whole(stages, x):
    for run, _, _ in stages:
        x = run([x])[0]
    return x


def cascade(stages, x, chunk, block):
    run = CascadeRun([Stage(*stage) for stage in stages], chunk)
    parts = [run.feed([x[:, :, i : i + block]]) for i in range(0, x.shape[2], block)] + [run.finish()]
    return np.concatenate([part[0] for part in parts if part], axis=2), run


@pytest.mark.parametrize("chunk,block", [(64, 1000), (16, 2), (2, 2), (64, 50), (4096, 999)])
@pytest.mark.parametrize("length", [2, 30, 1000])
def test_a_cascade_computes_what_the_whole_signal_run_computes(chunk, block, length):
    x = np.random.default_rng(length).standard_normal((2, 1, length)).astype(np.float32)
    out, _ = cascade(TOY_STAGES, x, chunk, block)
    np.testing.assert_allclose(out, whole(TOY_STAGES, x), rtol=0, atol=1e-6)


def test_a_cascade_lags_by_its_contexts_and_a_chunk_per_stage():
    x = np.random.default_rng(0).standard_normal((1, 1, 4000)).astype(np.float32)
    run = CascadeRun([Stage(*stage) for stage in TOY_STAGES], 16)
    assert run.delay == 6 + 2 + 2 * 9 + 2 * 2 + 16 * 5  # each context and each stage's chunk, in first-stage frames
    given = returned = 0
    for i in range(0, 4000, 2):
        given += 2
        output = run.feed([x[:, :, i : i + 2]])
        returned += output[0].shape[2] if output else 0
        assert given - run.delay <= returned <= given  # never further behind than the delay


def test_a_stage_without_context_runs_on_all_it_has_and_holds_nothing():
    calls = []

    def pointwise(xs):
        calls.append(xs[0].shape[2])
        return [2 * xs[0]]

    run = CascadeRun([Stage(*TOY_STAGES[0]), Stage(pointwise, 0, Fraction(1))], 64)
    alone = CascadeRun([Stage(*TOY_STAGES[0])], 64)
    x = np.random.default_rng(1).standard_normal((1, 1, 1000)).astype(np.float32)
    for i in range(0, 1000, 100):
        block = [x[:, :, i : i + 100]]
        released = alone.feed(block)[0]
        np.testing.assert_array_equal(run.feed(block)[0], 2 * released)  # it passes on all it gets, at once
    np.testing.assert_array_equal(run.finish()[0], 2 * alone.finish()[0])
    assert sum(calls) == 1000  # every frame computed once


def test_a_finished_cascade_refuses_more():
    run = CascadeRun([Stage(*TOY_STAGES[0])], 8)
    run.feed([np.ones((1, 1, 8), np.float32)])
    run.finish()
    with pytest.raises(ValueError, match="finished"):
        run.finish()


ov = pytest.importorskip("openvino")

from unmix.runtime import openvino_backend  # noqa: E402  (after the skip: it needs openvino)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_openvino_engine(tmp_path_factory)


@pytest.mark.parametrize("chunk,block", [(1024, 4096), (256, 8), (256, 1000), (64, 24)])
def test_openvino_stages_compute_what_the_whole_graph_computes(engine, chunk, block):
    x = (0.3 * np.random.default_rng(3).standard_normal((2, 1, 3000))).astype(np.float32)
    stages = engine.stages(chunk)
    assert 3 <= len(stages) <= 5
    run = CascadeRun(stages, chunk)
    parts = [run.feed([x[:, :, i : i + block]]) for i in range(0, x.shape[2], block)] + [run.finish()]
    outputs = [np.concatenate([part[k] for part in parts if part], axis=2) for k in range(len(STEMS))]
    expected = engine.run(x)
    for stem, output in zip(engine.stems, outputs, strict=True):
        assert output.shape == x.shape
        np.testing.assert_allclose(output, expected[stem], rtol=0, atol=1e-5 * np.abs(expected[stem]).max())


@pytest.mark.skipif(not openvino_backend.native_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_stages_hand_over_what_the_whole_bf16_graph_holds(tmp_path_factory):
    """Two-stage long windows pass bfloat16 between the stages: the tensor at the cut is bf16 inside the whole
    graph too, so the staged output is the whole graph's, not merely close to it."""
    engine = tiny_openvino_engine(tmp_path_factory, "bf16")
    chunk = 2056  # long windows against the tiny model's context: the plan cuts both parts in two
    stages = engine.stages(chunk)
    assert len(stages) == 5
    x = (0.3 * np.random.default_rng(4).standard_normal((1, 1, 2 * chunk))).astype(np.float32)
    run = CascadeRun(stages, chunk)
    parts = [run.feed([x]), run.finish()]
    expected = engine.run(x)
    for index, stem in enumerate(engine.stems):
        output = np.concatenate([part[index] for part in parts if part], axis=2)
        np.testing.assert_allclose(output, expected[stem], rtol=0, atol=1e-6 * np.abs(expected[stem]).max())


def test_the_silence_gate_zeroes_only_outputs_whose_input_is_silent_around_them():
    from unmix.runtime.chunking import SilenceGate

    x = np.zeros((2, 100), np.float32)
    x[0, 50] = 1.0  # item 0 sounds at sample 50 only; item 1 is silent throughout
    gate = SilenceGate(2, reach=5)
    gate.add(x[:, :60])
    first = gate.gate(np.ones((2, 3, 40), np.float32))
    gate.add(x[:, 60:])
    rest = gate.gate(np.ones((2, 3, 60), np.float32))
    out = np.concatenate([first, rest], axis=2)
    assert not out[1].any()
    np.testing.assert_array_equal(np.flatnonzero(out[0, 0]), np.arange(45, 56))
    assert (out[0] == out[0, :1]).all()


@pytest.fixture(scope="module")
def raw_separator(tmp_path_factory):
    from unmix.runtime import Separator

    return Separator.from_bundle(
        tiny_bundle(tmp_path_factory),
        backend="openvino",
        precision="fp32",
        refine=False,
        chunk=512,
        threads=1,
        stateful=False,  # in stages: the stateful models are checked against them
    )


def test_a_low_latency_stream_computes_what_separate_computes_and_trails_by_its_latency(raw_separator):
    audio = (0.3 * np.random.default_rng(5).standard_normal((6000, 2))).astype(np.float32)
    rate = raw_separator.sample_rate
    whole = raw_separator.separate(audio, rate)
    stream = raw_separator.stream(rate, 2, low_latency=True)
    parts, given, returned = [], 0, 0
    for first in range(0, len(audio), 100):
        part = stream.feed(audio[first : first + 100])
        given, returned = given + 100, returned + len(part[raw_separator.stems[0]])
        assert returned >= given - stream.latency
        parts.append(part)
    parts.append(stream.finish())
    for stem in raw_separator.stems:
        streamed = np.concatenate([part[stem] for part in parts])
        np.testing.assert_allclose(streamed, whole[stem], rtol=0, atol=1e-5 * np.abs(whole[stem]).max())


def test_digital_silence_stays_silent_without_refinement(raw_separator):
    audio = (0.3 * np.random.default_rng(6).standard_normal((20_000, 1))).astype(np.float32)
    reach = raw_separator.manifest.context_samples
    audio[4000:16000] = 0
    stems = raw_separator.separate(audio, raw_separator.sample_rate)
    for out in stems.values():
        assert not out[4000 + reach + 1 : 16000 - reach - 1].any() and out[:4000].any() and out[16000:].any()
    assert not any(out.any() for out in raw_separator.separate(np.zeros(3000, np.float32), 44100).values())


@pytest.mark.parametrize("refine", [False, True])
def test_whole_signals_on_the_stateful_models_equal_the_stages_and_are_the_fp32_default(tmp_path_factory, refine):
    from unmix.runtime import Separator

    def load(**options):
        bundle = tiny_bundle(tmp_path_factory, ALL_STEMS)  # all four: refinement too
        return Separator.from_bundle(
            bundle, backend="openvino", precision="fp32", refine=refine, chunk=512, threads=1, **options
        )

    audio = (0.3 * np.random.default_rng(7).standard_normal((30_000, 2))).astype(np.float32)
    audio[9000:21000] *= np.linspace(0, 1, 12000, dtype=np.float32)[:, None]
    default, stages = load(), load(stateful=False)
    assert default.stateful and not stages.stateful
    assert "stateful" in default.description and "stateful" not in stages.description
    staged = stages.separate(audio, 44100)
    tolerance = 1e-4 if refine else 1e-5  # the filters carry the graphs' fp32 rounding on a little
    for stem, out in default.separate(audio, 44100).items():
        assert out.shape == audio.shape
        np.testing.assert_allclose(out, staged[stem], rtol=0, atol=tolerance * np.abs(staged[stem]).max())


def test_stateful_graphs_are_refused_where_the_backend_has_none(tmp_path_factory):
    from unmix.runtime import Separator
    from unmix.runtime.errors import UsageError

    bundle = tiny_bundle(tmp_path_factory)
    with pytest.raises(UsageError, match="openvino backend only"):
        Separator.from_bundle(bundle, backend="ort", stateful=True)
    assert not Separator.from_bundle(bundle, backend="ort", threads=1).stateful
