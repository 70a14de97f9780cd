"""Exact chunking by overlap-save: which windows of the signal to run, and which of their outputs to keep.

The graph is a stack of convolutions (plus a per-frame argmin), so an output sample depends only on the input within
`context` samples on either side of it: the windows' kept outputs, joined, equal the graph run once on the whole
signal zero-padded to a multiple of the hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Kept samples per window; on OpenVINO an odd number of hops: its convolutions run markedly slower on lengths
# with large power-of-two factors, and with an odd count every stage's window is odd at the latent rate.
# Whole-window backends recompute 2 × 2.08 s of context around each window, so they take long windows. OpenVINO
# runs in stages, each recomputing only its own context, and keeps memory in proportion to its windows, so it
# takes short ones (bench/results has the measurements behind both). The TensorRT engines' profiles fit these.
DEFAULT_CHUNK_SECONDS = {"openvino": 5.0}
OTHER_CHUNK_SECONDS = 20.0
# int8 on OpenVINO runs in stages (fp32 runs the stateful models instead), whose memory follows the windows: shorter
# ones hold less at the same speed (bench/results/chunk-int8-cpu-20261208T0005Z.md).
INT8_CHUNK_SECONDS = {"openvino": 2.5}


def default_chunk(backend: str, sample_rate: int, hop: int, precision: str = "fp32") -> int:
    """The default chunk (kept samples per window, a multiple of `hop`) of `backend` at `sample_rate` and
    `precision` (a resolved one, not "auto")."""
    seconds = DEFAULT_CHUNK_SECONDS.get(backend, OTHER_CHUNK_SECONDS)
    if precision == "int8":
        seconds = INT8_CHUNK_SECONDS.get(backend, seconds)
    hops = max(1, round(seconds * sample_rate / hop))
    return (hops | 1 if backend == "openvino" else hops) * hop


@dataclass(frozen=True)
class Window:
    """Input `[start, stop)` to run; output `[keep_start, keep_stop)` to keep (absolute sample indices)."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


class ChunkPlan:
    """Window arithmetic for `chunk` kept samples per window and `context` samples on each side.

    A window yields exact output everywhere except within `context` of a cut edge; the signal's own edges are no
    cut, because there the window has the same boundary (the convolutions' zero padding) as a whole-signal run.
    Every window is `chunk + 2·context` samples long and starts at a multiple of `chunk`, so the strided
    convolutions see the same sample grid as the whole-signal run (all lengths are multiples of the hop), and
    windows batch together. Window k keeps the output `[k·chunk + context, (k+1)·chunk + context)`; window 0 keeps
    from 0. When the signal ends, one last window, flush with the end, keeps what is left; a signal shorter than
    one window is run whole.
    """

    def __init__(self, chunk: int, context: int, hop: int):
        if chunk <= 0 or chunk % hop:
            raise ValueError(f"chunk must be a positive multiple of {hop} samples, got {chunk}")
        self.chunk = chunk
        self.context = -(-context // hop) * hop  # whole frames: every window start stays on the hop grid
        self.hop = hop

    @property
    def window_length(self) -> int:
        return self.chunk + 2 * self.context

    def padded_length(self, length: int) -> int:
        """The signal length rounded up to the hop (the graph's input must be a multiple of it)."""
        return -(-length // self.hop) * self.hop

    def window(self, k: int) -> Window:
        """Full window `k`, for any signal long enough to hold it."""
        start = k * self.chunk
        keep_start = 0 if k == 0 else start + self.context
        return Window(start, start + self.window_length, keep_start, start + self.chunk + self.context)

    def full_windows(self, available: int) -> int:
        """How many full windows fit in the first `available` samples."""
        return max(0, (available - self.window_length) // self.chunk + 1)

    def finish(self, done: int, length: int) -> list[Window]:
        """The windows still to run for a signal of `length` samples after the first `done` full ones."""
        padded = self.padded_length(length)
        count = self.full_windows(padded)
        windows = [self.window(k) for k in range(done, count)]
        covered = self.window(count - 1).keep_stop if count else 0
        if count == 0 and padded:
            windows.append(Window(0, padded, 0, padded))
        elif covered < padded:
            windows.append(Window(padded - self.window_length, padded, covered, padded))
        return windows


class SignalBuffer:
    """The recent part of a growing multichannel signal, addressed by absolute sample index."""

    def __init__(self, channels: int):
        self.data = np.zeros((0, channels), np.float32)
        self.offset = 0  # absolute index of data[0]

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    def append(self, block: np.ndarray) -> None:
        self.data = np.concatenate([self.data, block]) if len(self.data) else np.array(block, np.float32)

    def pad_to(self, length: int) -> None:
        """Append zeros up to absolute length `length`."""
        if length > self.end:
            self.append(np.zeros((length - self.end, self.data.shape[1]), np.float32))

    def slice(self, start: int, stop: int) -> np.ndarray:
        if start < self.offset or stop > self.end:
            raise IndexError(f"samples [{start}, {stop}) are not buffered ([{self.offset}, {self.end}))")
        return self.data[start - self.offset : stop - self.offset]

    def discard_before(self, position: int) -> None:
        drop = min(max(0, position - self.offset), len(self.data))
        if drop:
            self.data = self.data[drop:].copy()  # copy, so the dropped head is freed
            self.offset += drop


class SilenceGate:
    """Digital silence in, digital silence out: zeroes each output sample whose input, within `reach` samples on
    either side, is all zeros (the graph would otherwise turn silence into its biases' hum).

    Follows a growing (items, frames) input by absolute sample index; `gate` takes outputs in order.
    """

    def __init__(self, items: int, reach: int):
        self.reach = reach
        self._counts = np.zeros((items, 1), np.int64)  # sounding samples before each held position (a prefix sum)
        self._offset = 0  # absolute index of _counts[:, 0]
        self._gated = 0  # outputs gated so far

    def add(self, block: np.ndarray) -> None:
        """Append (items, frames) of input."""
        steps = np.cumsum(block != 0, axis=1, dtype=np.int64) + self._counts[:, -1:]
        self._counts = np.concatenate([self._counts, steps], axis=1)

    def gate(self, output: np.ndarray) -> np.ndarray:
        """The next (items, stems, frames) outputs, zeroed where the input around them is silent (in place)."""
        first, frames = self._gated, output.shape[2]
        positions = np.arange(first, first + frames)
        end = self._offset + self._counts.shape[1] - 1  # input samples held up to
        low = np.clip(positions - self.reach, self._offset, end) - self._offset
        high = np.clip(positions + self.reach + 1, self._offset, end) - self._offset
        silent = self._counts[:, high] == self._counts[:, low]
        output *= ~silent[:, None, :]
        self._gated += frames
        drop = max(0, self._gated - self.reach - self._offset)
        if drop:
            self._counts = self._counts[:, drop:].copy()
            self._offset += drop
        return output
