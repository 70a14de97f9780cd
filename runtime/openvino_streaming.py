"""Stateful OpenVINO models for streaming: every input sample passes every layer once.

`stream_graph` rewrites a stem graph's encoder or decoder, compiled for a fixed block of new frames per call, so that
each convolution keeps in an OpenVINO variable the input history its next outputs need (cached convolutions, as
RAVE's cached_conv); `StatefulRun` runs one signal through such models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .heap import return_freed_memory
from .openvino_stages import FRAMEWISE, data_ops

_ORDER = "order."  # the names of the outputs that only order the computation (`_order_output`)
_FRAMEWISE = (*FRAMEWISE, "Squeeze", "Unsqueeze", "Gather", "Transpose")


@dataclass(frozen=True)
class Grid:
    """The frames that convolutions wider than one frame are given: the position of the first frame ever given
    (`start`, ≤ 0: they start early), how many each call gives (`frames`), and an op whose output they are (`input`,
    whose length in the stateless graph is theirs). Convolutions on one grid share one mask."""

    input: str
    start: int
    frames: int


@dataclass(frozen=True)
class _Length:
    """How an op's output length follows from its data source's (the stateless graph's arithmetic)."""

    source: str | None  # None: a model input
    span: int = 1
    stride: int = 1
    pads: int = 0  # begin + end
    scale: int = 1  # DepthToSpace


class StreamLayout:
    """Positions and lengths of one stream graph: which frames of each grid (`Grid`) lie in the signal."""

    def __init__(self, grids: list[Grid], lengths: dict[str, _Length], output: str, start: int):
        self.grids = grids
        self._lengths = lengths
        self._output = output
        self.output_start = start  # the position of the first call's first output frame (≤ 0)

    def to_json(self) -> dict:
        """The layout as JSON-ready data (`from_json` reads it back): kept beside a cached compile."""
        return {
            "grids": [[grid.input, grid.start, grid.frames] for grid in self.grids],
            "lengths": [[name, *vars(rule).values()] for name, rule in self._lengths.items()],
            "output": self._output,
            "start": self.output_start,
        }

    @classmethod
    def from_json(cls, data: dict) -> StreamLayout:
        grids = [Grid(name, int(start), int(frames)) for name, start, frames in data["grids"]]
        lengths = {name: _Length(*rule) for name, *rule in data["lengths"]}
        return cls(grids, lengths, str(data["output"]), int(data["start"]))

    def _all_lengths(self, length: int) -> dict[str, int]:
        known: dict[str, int] = {}
        for name, rule in self._lengths.items():
            size = length if rule.source is None else known[rule.source]
            size = (size + rule.pads - rule.span) // rule.stride + 1 if rule.span > 1 or rule.stride > 1 else size
            known[name] = size * rule.scale
        return known

    def input_lengths(self, length: int) -> list[int]:
        """Each grid's length in the stateless graph run on a `length`-frame input."""
        known = self._all_lengths(length)
        return [known[grid.input] for grid in self.grids]

    def output_length(self, length: int) -> int:
        """The stateless graph's output length for a `length`-frame input."""
        return self._all_lengths(length)[self._output]

    def bounds(self, call: int, lengths: list[int] | None) -> np.ndarray | None:
        """(grids, 2) int32: per grid, the first and the end frame of call `call`'s new frames that lie inside the
        signal (`lengths`: `input_lengths` once the signal's length is known); None when every frame of every grid
        does (the plain model runs)."""
        bounds = np.empty((len(self.grids), 2), np.int32)
        for index, grid in enumerate(self.grids):
            first = grid.start + call * grid.frames
            end = grid.frames if lengths is None else lengths[index] - first
            bounds[index] = min(max(-first, 0), grid.frames), min(max(end, 0), grid.frames)
        if (bounds[:, 0] == 0).all() and (bounds[:, 1] == [grid.frames for grid in self.grids]).all():
            return None
        return bounds


@dataclass
class StreamGraph:
    """A model rewritten for streaming: `plain` and `masked` (the same, with a (grids, 2) int32 `bounds` input
    last), both stateful, the variables named alike; `layout` follows its positions."""

    plain: object  # openvino.Model
    masked: object
    layout: StreamLayout


def stream_graph(model, shapes: list[list[int]], start: int = 0) -> StreamGraph:
    """Rewrite `model` (inputs (N, C, T) with time last, all at one rate) for calls with inputs of `shapes`.

    Each convolution keeps in a variable the input history its next outputs need, and each addition of two branches
    delays the branch that runs ahead by the frames it leads (a residual block's skip path, read from the history
    its dilated convolution keeps of the same input: a convolution after a ReLU caches the ReLU's input, then applies
    the ReLU, and an int8 graph's quantization and dequantization, to history and new frames alike, so that OpenVINO
    still finds a dequantization right before each quantized convolution and runs it on its int8 kernels):

        full  = [history, new frames]       history: `held` frames, zeros at the start
        out   = conv(full) without padding   block / stride outputs
        state = the last `held` frames of full

    `held` stays the same from the first call on (S − stride ≤ held < S, S the kernel's span), so every call has one
    shape: one static compile. The price is that layers start early: their first outputs sit before the signal's
    start (position < 0), where the stateless graph reads zero padding; past the signal's end it reads zero padding
    again. So a call that touches either edge runs the `masked` model, which zeroes, at each convolution's input, the
    frames outside the signal (`StreamLayout.bounds`); the variables move between the two models with the call. In
    between, the `plain` model runs.

    start: the position of the inputs' first frame (a decoder fed by a stream encoder starts where its codes do).
    Raises ValueError for an operation this rewrite does not know, or a block a stride does not divide.
    """
    plain, layout = _rewrite(model, shapes, start, masked=False)
    masked, _ = _rewrite(model, shapes, start, masked=True)
    return StreamGraph(plain, masked, layout)


def _rewrite(model, shapes: list[list[int]], start: int, masked: bool):
    import openvino as ov
    from openvino import passes

    ops = ov.opset13
    copy = model.clone()
    copy.reshape({index: shape for index, shape in enumerate(shapes)})
    for index, op in enumerate(copy.get_ordered_ops()):  # joined stems repeat their names: the rewrite keys by name
        if op.get_type_name() != "Parameter":
            op.set_friendly_name(f"{index}:{op.get_friendly_name()}")
    ordered, computed = data_ops(copy)
    bounds = ops.parameter([-1, 2], np.int32, name="bounds") if masked else None  # (grids, 2), known at the end
    place: dict[str, tuple[int, int]] = {}  # op → (position of its first output frame, frames per call)
    lengths: dict[str, _Length] = {}
    signature: dict[str, tuple] = {}  # op → the length arithmetic from the input to it (equal: equal lengths)
    grids: dict[tuple, tuple[Grid, object]] = {}  # (start, frames, signature) → the grid and its mask
    pairs = []  # (state parameter, next-state result)
    # OpenVINO's CPU plugin orders nodes depth first from the outputs, in order, and writes the variables last. So
    # each next state also feeds a one-frame output, listed first: its slice then runs right after its concatenation,
    # which it would otherwise keep (a layer's whole input) until the end of the call.
    orders = []
    step_axis = (_i64([1]), _i64([2]))  # shared by every Slice: fewer nodes, a shorter compile
    histories: dict[str, tuple[object, int]] = {}  # op → [its cached history, new frames] and the history's length

    def source(op, index: int = 0) -> str:
        return op.input_value(index).get_node().get_friendly_name()

    def cached(value, held: int, name: str):
        """[state, value] along time, and the state's parameter and next value (the last `held` frames)."""
        shape = list(value.get_partial_shape().to_shape())
        state = ops.parameter([shape[0], shape[1], held], value.get_element_type(), name=name)
        state.output(0).set_names({name})
        full = ops.concat([state, value], 2)
        frames = shape[2]
        following = _part(ops, full, frames, held, step_axis)
        result = ops.result(following)
        result.set_friendly_name(f"next.{name}")  # the variable's name comes from both: the same in either model
        pairs.append((state, result))
        orders.append(_order_output(ops, following, name))
        return full

    for op in ordered:
        name, kind = op.get_friendly_name(), op.get_type_name()
        sources = [source(op, i) for i in range(op.get_input_size())]  # before any input is rewired
        if kind == "Parameter":
            place[name] = (start, op.output(0).get_partial_shape().to_shape()[2])
            lengths[name], signature[name] = _Length(None), ()
            continue
        inputs = [i for i, name_in in enumerate(sources) if name_in in place]
        first, frames = place[sources[inputs[0]]]
        if kind == "Convolution":
            attributes = op.get_attributes()
            stride, dilation = attributes["strides"][0], attributes["dilations"][0]
            pad_begin, pad_end = attributes["pads_begin"][0], attributes["pads_end"][0]
            span = (op.input_value(1).get_partial_shape()[2].get_length() - 1) * dilation + 1
            if frames % stride:
                raise ValueError(f"{name}: stride {stride} does not divide a call's {frames} frames")
            held = span - stride
            held += (first - held + pad_begin) % stride  # the first output on the stride grid
            # cache what the ReLU or int8 dequantization before it reads: a residual skip reads the same history
            # (see the additions), and OpenVINO runs a convolution in int8 only right after a dequantization
            value, chain = _input_chain(op.input_value(0), computed)
            read = value.get_node().get_friendly_name()
            if span > 1:  # what lies outside the signal reaches the signal only through wider kernels
                key = (first, frames, signature[sources[0]])
                if key not in grids:
                    mask = _inside(ops, bounds, len(grids), frames) if masked else None
                    grids[key] = (Grid(sources[0], first, frames), mask)
                if masked:
                    value = ops.select(grids[key][1], value, ops.constant(np.zeros((), np.float32))).output(0)
            full = cached(value, held, f"state.{len(pairs)}") if held else value  # a 1×1 one keeps nothing
            if held:
                histories[read] = (full, held)
            full = _reapplied(ops, full, chain)
            replacement = ops.convolution(full, op.input_value(1), [stride], [0], [0], [dilation])
            place[name] = ((first - held + pad_begin) // stride, frames // stride)
            lengths[name] = _Length(sources[0], span, stride, pad_begin + pad_end)
            same = stride == 1 and pad_begin + pad_end == span - 1  # the output as long as the input
            signature[name] = signature[sources[0]] + (() if same else ((span, stride, pad_begin + pad_end),))
        elif kind == "DepthToSpace":
            replacement = None
            place[name] = (2 * first, 2 * frames)
            lengths[name] = _Length(sources[0], scale=2)
            signature[name] = signature[sources[0]] + ("twice",)
        elif kind in _FRAMEWISE or kind == "Result":
            replacement = None
            starts = [place[sources[i]][0] for i in inputs]
            if any(position != starts[0] for position in starts):  # align the branches: delay those that lead
                for i, position in zip(inputs, starts, strict=True):
                    if lead := position - min(starts):
                        full, held = histories.get(sources[i], (None, 0))
                        if held < lead:  # no convolution keeps enough of it: a delay line of its own
                            full, held = cached(op.input_value(i), lead, f"state.delay.{len(pairs)}"), lead
                        begin = held - lead  # full holds frames from position − held on
                        op.input(i).replace_source_output(_part(ops, full, begin, frames, step_axis))
            place[name] = (min(starts), frames)
            lengths[name] = _Length(sources[inputs[0]])
            signature[name] = signature[sources[inputs[0]]]
        else:
            raise ValueError(f"{name}: a {kind} operation cannot stream here")
        if replacement is not None:
            replacement.set_friendly_name(name)
            op.output(0).replace(replacement.output(0))

    results = list(copy.get_results())
    if masked:
        assert bounds is not None  # made above whenever masked
        bounds.set_partial_shape(ov.PartialShape([len(grids), 2]))
    parameters = list(copy.get_parameters()) + [state for state, _ in pairs] + ([bounds] if masked else [])
    rewritten = ov.Model(
        orders + results + [result for _, result in pairs], parameters, f"{copy.get_friendly_name()}_stream"
    )
    rewritten.validate_nodes_and_infer_types()
    manager = passes.Manager()
    manager.register_pass(passes.MakeStateful([(state, result) for state, result in pairs]))
    manager.run_passes(rewritten)
    output = results[0].get_friendly_name()
    return rewritten, StreamLayout([grid for grid, _ in grids.values()], lengths, output, place[output][0])


# Single-input ops between a convolution and the tensor it reads: a ReLU, an int8 quantization and dequantization
_REAPPLIED = ("Relu", "FakeQuantize", "Convert", "Subtract", "Multiply")


def _input_chain(value, computed: set[str]) -> tuple[Any, list]:
    """The tensor that a convolution's input `value` is computed from by `_REAPPLIED` ops alone, and those ops,
    nearest that tensor first. computed: the names of the ops that depend on the model's inputs (not constants)."""
    chain = []
    while (node := value.get_node()).get_type_name() in _REAPPLIED and not any(
        node.input_value(i).get_node().get_friendly_name() in computed for i in range(1, node.get_input_size())
    ):
        chain.append(node)
        value = node.input_value(0)
    return value, chain[::-1]


def _reapplied(ops, value, chain: list):
    """`chain` (`_input_chain`'s ops) applied again, to `value` (a history and new frames)."""
    for node in chain:
        kind, constants = node.get_type_name(), [node.input_value(i) for i in range(1, node.get_input_size())]
        if kind == "Relu":
            value = ops.relu(value).output(0)
        elif kind == "FakeQuantize":
            value = ops.fake_quantize(value, *constants, node.get_attributes()["levels"]).output(0)
        elif kind == "Convert":
            value = ops.convert(value, node.get_output_element_type(0)).output(0)
        else:
            value = (ops.subtract if kind == "Subtract" else ops.multiply)(value, constants[0]).output(0)
    return value


def _order_output(ops, state, name: str):
    """A one-frame result read from `state` (N, C, held), in bfloat16: the plugin keeps in fp32 what leads to an
    fp32 output, and these lead to the next states. A max pool, which reads the channels-last layout in place."""
    held = state.get_partial_shape()[2].get_length()
    frame = ops.max_pool(state, [held], [1], [0], [0], [1]).output(0)  # stride `held`, kernel 1: the first frame
    converted = ops.convert(frame, "bf16")
    converted.output(0).set_names({f"{_ORDER}{name}"})
    return ops.result(converted)


def _inside(ops, bounds, index: int, frames: int):
    """(1, 1, frames) bool: the frames of a call within grid `index`'s bounds[index] = [first, end)."""
    row = ops.gather(bounds, ops.constant(np.array(index, np.int32)), ops.constant(np.array(0, np.int32)))
    first = ops.gather(row, ops.constant(np.array(0, np.int32)), ops.constant(np.array(0, np.int32)))
    end = ops.gather(row, ops.constant(np.array(1, np.int32)), ops.constant(np.array(0, np.int32)))
    frame = ops.constant(np.arange(frames, dtype=np.int32).reshape(1, 1, frames))
    return ops.logical_and(ops.greater_equal(frame, first), ops.less(frame, end))


def _part(ops, full, begin: int, frames: int, step_axis: tuple):
    """Frames [begin, begin + frames) of `full` (N, C, T) along time. step_axis: Slice's step and axes constants."""
    return ops.slice(full, _i64([begin]), _i64([begin + frames]), *step_axis).output(0)


def _i64(values: list[int]):
    import openvino as ov

    return ov.opset13.constant(np.array(values, np.int64))


class _StreamRequests:
    """One stream's infer request on a `CompiledStream`: on its plain model or its masked one, whichever the call
    needs, the variables moving over with it. The request it leaves goes first, so a model no stream uses is
    released (`CompiledStream.done`) before the other is needed: a stream holds one model at a time."""

    def __init__(self, compiled: CompiledStream):
        self.layout = compiled.layout
        self._compiled = compiled
        self._kind: str | None = None
        self._request: Any | None = None  # an openvino InferRequest on the `_kind` model

    def run(self, inputs: list[np.ndarray], bounds: np.ndarray | None) -> list[np.ndarray]:
        """One call; the outputs are the request's buffers, valid until its next call."""
        kind = "plain" if bounds is None else "masked"
        if kind != self._kind:
            import openvino as ov

            # the variables move over, copied out first: the request they live in goes before the next one comes
            held = [] if self._request is None else [(s.name, s.state.data.copy()) for s in self._request.query_state()]
            self.close()
            request = self._compiled.request(kind)
            request.reset_state()
            states = {state.name: state for state in request.query_state()}
            for name, data in held:
                states[name].state = ov.Tensor(data)
            self._kind, self._request = kind, request
        assert self._request is not None  # made above unless the request of this kind is already held
        feeds = dict(enumerate(inputs if bounds is None else [*inputs, bounds]))
        self._request.infer(feeds, share_inputs=True, share_outputs=True)
        outputs = [self._request.get_output_tensor(index).data for index in self._compiled.outputs]
        if kind == "masked":  # a stream's edges, where both parts run their masked models: one working memory at a time
            outputs = [np.array(output) for output in outputs]
            self._compiled.release_working_memory(kind)
        return outputs

    def close(self) -> None:
        """Drop the request (and the model's working memory when no other stream uses it)."""
        if self._request is not None:
            self._request = None
            assert self._kind is not None  # set along with the request
            self._compiled.done(self._kind)
            self._kind = None


class CompiledStream:
    """A `StreamGraph` compiled: its plain and masked models and layout, with a count of the requests on each.

    reload: when given, `reload(kind)` compiles the `kind` model again (an import from `openvino_cache`), either
    model may be None until it is needed, and a model no request uses is dropped whole, not only its working
    memory. A stream's edges run the masked model and the rest the plain one, so a stream holds one of them at a
    time; a compiled model itself holds tens of MB beside its working memory (the README's Streaming figures).
    """

    def __init__(self, plain, masked, layout: StreamLayout, reload: Callable[[str], Any] | None = None):
        self.layout = layout
        self._models: dict[str, Any] = {"plain": plain, "masked": masked}
        # the outputs that carry data, not order (`_order_output`)
        compiled = plain if plain is not None else masked  # the same outputs (masked has one more input)
        self.outputs = [i for i, output in enumerate(compiled.outputs) if not any(_ORDER in n for n in output.names)]
        self._users = {"plain": 0, "masked": 0}
        self._reload = reload
        self._lock = threading.Lock()

    @property
    def resident(self) -> list[str]:
        """The kinds whose compiled model is in memory now."""
        return [kind for kind, model in self._models.items() if model is not None]

    def request(self, kind: str):
        """A new infer request on the `kind` model ("plain" or "masked"); `done(kind)` when it is dropped."""
        with self._lock:
            if self._reload is not None:  # what no request uses goes: at the start, the kind not needed yet
                for other, users in self._users.items():
                    if other != kind and not users:
                        self._models[other] = None
            if self._models[kind] is None:
                assert self._reload is not None  # only then are models dropped
                self._models[kind] = self._reload(kind)
            self._users[kind] += 1
            return self._models[kind].create_infer_request()

    def release_working_memory(self, kind: str) -> None:
        """Free the `kind` model's working memory between two calls of its one request (none when several streams
        use it: one of them may be running); the variables stay. Its next call allocates it again."""
        with self._lock:
            if self._users[kind] == 1:
                self._models[kind].release_memory()
                return_freed_memory()

    def done(self, kind: str) -> None:
        with self._lock:
            self._users[kind] -= 1
            if not self._users[kind]:  # no request runs on it: it goes, or its arena does, until the next one
                if self._reload is not None:
                    self._models[kind] = None
                else:
                    self._models[kind].release_memory()
                return_freed_memory()


class StatefulRun:
    """One signal through stream-compiled encoders, the nearest-code search and decoders, one block a call: the
    `cascade.CascadeRun` interface (`feed`, `finish`, `delay`) for `Separator.stream`.

    encoders: (items, 1, block) samples → one (items, C, block·rate) embedding per stem; nearest: those → (items,
    1, frames) int32 codes per stem; decoders: the codes → (items, 1, block) per stem. Exact: the outputs equal
    the stateless graphs' on the whole signal (to the precision's rounding).
    """

    def __init__(self, encoders: CompiledStream, nearest, decoders: CompiledStream, items: int, block: int):
        self._encoders, self._decoders = _StreamRequests(encoders), _StreamRequests(decoders)
        self._nearest = nearest
        self.block = block
        self._latency = -decoders.layout.output_start  # output frames trail the input frames they depend on
        self._input = np.zeros((items, 1, block), np.float32)  # the next block, filled as input arrives
        self._filled = 0
        self._calls = 0
        self._fed = 0
        self._finished = False

    @property
    def delay(self) -> int:
        """Input frames the output trails the input by, at most (a block waits until it is whole)."""
        return self._latency + self.block - 1

    def feed(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Append (items, 1, frames) input; returns each stem's new (items, 1, frames') output, or [] for none."""
        if self._finished:
            raise RuntimeError("this run is finished")
        signal = inputs[0]
        self._fed += signal.shape[2]
        parts = []
        while signal.shape[2]:
            taken = min(self.block - self._filled, signal.shape[2])
            self._input[:, :, self._filled : self._filled + taken] = signal[:, :, :taken]
            self._filled += taken
            signal = signal[:, :, taken:]
            if self._filled == self.block:
                parts.append(self._call(None))
        return _joined(parts)

    def finish(self) -> list[np.ndarray]:
        """The outputs up to the input's end, where the stateless graphs read zero padding."""
        if self._finished:
            raise RuntimeError("this run is finished")
        self._finished = True
        length = self._fed
        parts = []
        while self._decoders.layout.output_start + self._calls * self.block < length:
            self._input[:, :, self._filled :] = 0
            parts.append(self._call(length))
        self._encoders.close()
        self._decoders.close()
        return _joined(parts)

    def _call(self, length: int | None) -> list[np.ndarray]:
        """Run the block in `self._input`; each stem's output frames that lie in [0, length)."""
        call = self._calls
        self._calls += 1
        self._filled = 0
        encoder_layout, decoder_layout = self._encoders.layout, self._decoders.layout
        if length is None:
            encoder_lengths = decoder_lengths = None
        else:
            encoder_lengths = encoder_layout.input_lengths(length)
            decoder_lengths = decoder_layout.input_lengths(encoder_layout.output_length(length))
        embeddings = self._encoders.run([self._input], encoder_layout.bounds(call, encoder_lengths))
        codes = self._nearest(embeddings)
        outputs = self._decoders.run(codes, decoder_layout.bounds(call, decoder_lengths))
        first = decoder_layout.output_start + call * self.block
        keep_from = max(0, -first)
        keep_to = self.block if length is None else max(keep_from, min(self.block, length - first))
        return [np.array(output[:, :, keep_from:keep_to]) for output in outputs]


def _joined(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each stem's outputs of several calls in one array; [] for no calls."""
    if not parts:
        return []
    return [np.concatenate(stem, axis=2) if len(stem) > 1 else stem[0] for stem in zip(*parts, strict=True)]
