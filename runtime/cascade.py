"""Overlap-save in stages: a graph cut into a chain of stages, each run on overlap-save windows of its own input.

Whole-graph overlap-save (`chunking`) recomputes the whole graph's context around every window; here each stage
recomputes only its own, so every other frame of every layer is computed once, and the result is still exactly
what a whole-signal run gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .chunking import ChunkPlan, Window

StageFunction = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Stage:
    """One link of the chain.

    run: inputs [(items, C_in, frames)] → outputs [(items, C_out, frames · rate)]; the outputs may be buffers
        the next call overwrites (the cascade copies what it keeps).
    context: input frames that each output reads on either side (its receptive field's half-width).
    rate: output frames per input frame (1/2 for a strided convolution, 2 for a transposed one); its denominator
        is the stride the window starts must keep.
    """

    run: StageFunction
    context: int
    rate: Fraction
    release: Callable[[], None] | None = None  # called once the kept outputs are copied (frees `run`'s buffers)


class _StageRun:
    """One stage's input buffer and progress for one signal.

    Every window has the same length, `chunk + 2·context` (`ChunkPlan`'s windows, the last one flush with the
    input's end): one input shape, which backends that keep state per shape (OpenVINO keeps memory) need. Window
    edges stay on the stage's stride grid. A stage without context (each output frame reads only its own input frame)
    runs on all the input it has, in one call: it needs no margins, and holds nothing back.
    """

    def __init__(self, stage: Stage, chunk: Fraction):
        self.stage = stage
        self.align = stage.rate.denominator
        self.plan = ChunkPlan(max(self.align, int(chunk) // self.align * self.align), stage.context, self.align)
        self.context, self.chunk = self.plan.context, self.plan.chunk
        # the input held, as the pieces it arrived in (no copy on arrival): each piece one array per input
        self.pieces: list[list[np.ndarray]] = []
        self.offset = 0  # absolute input frame of pieces[0][...][:, :, 0]
        self.end = 0  # absolute input frame after the last piece
        self.window: list[np.ndarray] = []  # the last window's input, its buffers reused by windows of its shape
        self.done = 0  # input frames whose outputs have been returned
        self.next_window = 0  # full windows run so far (fixed windows)

    def feed(self, inputs: list[np.ndarray], length: int | None = None) -> Iterator[list[list[np.ndarray]]]:
        """Append inputs and yield the outputs they complete, a window at a time, each in a one-item list for the
        caller to take out (so that this generator holds no reference while it waits); `length` (the input's
        whole length) at the end."""
        self._append(inputs)
        del inputs  # held in `pieces` only, so a stage that is done with them frees them
        if length is not None and self.end != length:
            raise ValueError(f"stage input ends at {self.end} frames, expected {length}")
        if self.context == 0:
            windows = self._pointwise_window(length)
        else:
            windows = self._fixed_windows(length)
        for window in windows:
            kept = [self._run(window)]
            self.done = window.keep_stop
            # keep what the next window reads: from `context` before the next output, and a window's length back
            # from the input's end (the final window is flush with it)
            keep_from = (
                self.done if self.context == 0 else min(self.done - self.context, self.end - self.plan.window_length)
            )
            self._discard_before(keep_from)
            yield kept

    def _pointwise_window(self, length: int | None) -> list[Window]:
        stop = self.end if length is not None else self.end // self.align * self.align
        return [Window(self.done, stop, self.done, stop)] if stop > self.done else []

    def _fixed_windows(self, length: int | None) -> list[Window]:
        if length is None:
            count = self.plan.full_windows(self.end)
            windows = [self.plan.window(k) for k in range(self.next_window, count)]
            self.next_window = max(self.next_window, count)
            return windows
        return self.plan.finish(self.next_window, length)

    def _run(self, window: Window) -> list[np.ndarray]:
        rate = self.stage.rate
        outputs = self.stage.run(self._input(window.start, window.stop))
        a, b = (window.keep_start - window.start) * rate, (window.keep_stop - window.start) * rate
        kept = [np.array(output[:, :, int(a) : int(b)]) for output in outputs]  # a copy: `run` may reuse its buffers
        if self.stage.release is not None:
            del outputs
            self.stage.release()
        return kept

    def _append(self, inputs: list[np.ndarray]) -> None:
        if inputs and inputs[0].shape[2]:
            self.pieces.append(inputs)
            self.end += inputs[0].shape[2]

    def _input(self, start: int, stop: int) -> list[np.ndarray]:
        """Input frames `start`…`stop` of every input, each one contiguous array: the window's only copy."""
        parts, position = [], self.offset
        for piece in self.pieces:
            length = piece[0].shape[2]
            first, last = max(start, position), min(stop, position + length)
            if first < last:
                parts.append([x[:, :, first - position : last - position] for x in piece])
            position += length
        if len(parts) == 1 and all(x.flags.c_contiguous for x in parts[0]):
            return parts[0]
        # one buffer per input, reused for every window of its shape (fresh large arrays cost page faults each time)
        shapes = [(*xs[0].shape[:2], stop - start) for xs in zip(*parts, strict=True)]
        if [window.shape for window in self.window] != shapes:
            self.window = [
                np.empty(shape, xs[0].dtype) for shape, xs in zip(shapes, zip(*parts, strict=True), strict=True)
            ]
        for window, xs in zip(self.window, zip(*parts, strict=True), strict=True):
            np.concatenate(xs, axis=2, out=window)
        return self.window

    def _discard_before(self, position: int) -> None:
        """Drop the input before `position`: the pieces that end there, and the head of one mostly before it."""
        while self.pieces and self.offset + self.pieces[0][0].shape[2] <= position:
            self.offset += self.pieces.pop(0)[0].shape[2]
        drop = position - self.offset
        if self.pieces and 2 * drop > self.pieces[0][0].shape[2]:  # mostly done with: keep a copy of its tail only
            self.pieces[0] = [x[:, :, drop:].copy() for x in self.pieces[0]]
            self.offset += drop


class CascadeRun:
    """One signal through a chain of stages; `chunk` is each window's kept length in first-stage input frames.

    Each stage has its own `ChunkPlan` over its own input (the kept output of the stage before). This is exact for
    the reason `chunking` is: a stage's kept outputs equal a whole-signal run of that stage, and its input is the
    previous stage's whole-signal output. The edges too: each stage's first window starts at its input's start and
    its last ends at its input's end, where the whole-signal run pads its convolutions as the window does. Output
    lags input by the stages' contexts plus up to one chunk per stage (`delay`), so small chunks stream with a short
    delay and large chunks run offline with little recomputation.
    """

    def __init__(self, stages: Sequence[Stage], chunk: int):
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self._runs = []
        position = Fraction(1)  # a stage's input frames per first-stage input frame
        for stage in stages:
            self._runs.append(_StageRun(stage, chunk * position))
            position *= stage.rate
        self._length = 0
        self._finished = False

    @property
    def delay(self) -> int:
        """First-stage input frames the output trails the input by, at most, before the end: the stages' contexts,
        plus one chunk per stage (stride groups aside)."""
        position, total = Fraction(1), Fraction(0)
        for run in self._runs:
            total += (run.context + run.chunk) / position
            position *= run.stage.rate
        return math.ceil(total)  # exact on the Fraction, as np.ceil was

    def feed(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Push (items, C, frames) inputs, held as they are (not copied: do not change them afterwards); returns the
        last stage's new outputs (possibly zero frames long)."""
        self._length += inputs[0].shape[2]
        return _joined(list(self._push(0, [inputs])))

    def finish(self) -> list[np.ndarray]:
        """End of input: the last stage's remaining outputs. The input's length must suit every stage's stride."""
        if self._finished:
            raise ValueError("this cascade run is finished")
        self._finished = True
        length = Fraction(self._length)
        parts: list[list[np.ndarray]] = []
        for index, run in enumerate(self._runs):
            if length.denominator != 1:
                raise ValueError(f"{self._length} input frames do not divide into the stages' strides")
            for outputs in run.feed([], int(length)):  # each stage's last windows, through the rest as they come
                parts.extend(self._push(index + 1, outputs))
            length *= run.stage.rate
        return _joined(parts)

    def _push(self, index: int, box: list[list[np.ndarray]]) -> Iterator[list[np.ndarray]]:
        """Feed stage `index` the inputs in `box` (taken out of it) and yield the last stage's outputs window by
        window, each window's outputs carried through the later stages before the next window runs, and held by
        nothing once a stage is done with them (so no stage's outputs pile up)."""
        inputs = box.pop()
        if index == len(self._runs):
            yield inputs
            return
        windows = self._runs[index].feed(inputs)
        del inputs
        for outputs in windows:
            yield from self._push(index + 1, outputs)


def _joined(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    if not parts:
        return []
    if len(parts) == 1:
        return parts[0]
    return [np.concatenate(pieces, axis=2) for pieces in zip(*parts, strict=True)]
