"""Separating a live stream of raw samples: blocks in, each stem's samples written as soon as they are final.

The input is raw float32 little-endian interleaved samples (what `ffmpeg -f f32le` and `sox -t f32` write), read
from a pipe, a FIFO or a file. The separator's low-latency stream (`Separator.stream(..., low_latency=True)`)
computes each stage as soon as its input allows; each stem goes into its own file under the output folder, written
as it grows into a hidden temporary and renamed into place once the stream has ended and the file reads back whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .audio import AtomicWriter
from .errors import AudioError, OutputError
from .files import _safe_stem
from .separator import Separator

SAMPLE_BYTES = 4  # float32
LIVE_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}


@dataclass(frozen=True)
class LiveResult:
    """What a live run did. Latencies in seconds: `model_latency` is how far the stems may trail the input (the
    separator's promise); `lag` how far they did trail it, at most, after a block was fed (audio time, whatever
    the machine's speed); `wall_latency_max` / `_median` are measured, from a block's arrival to the write of the
    stems' samples at its end (meaningful for input that arrives in real time)."""

    outputs: dict[str, Path]
    seconds: float
    elapsed: float
    model_latency: float
    lag: float
    wall_latency_max: float
    wall_latency_median: float


def separate_live(
    separator: Separator,
    source: BinaryIO,
    output_dir: str | Path,
    *,
    sample_rate: int,
    channels: int,
    block_seconds: float = 0.5,
    format: str = "wav",
    on_block: Callable[[float, float], None] | None = None,
) -> LiveResult:
    """Separate raw float32 interleaved samples read from `source` until it ends; write `<stem>.<format>` files.

    block_seconds: input read per step (the stream's granularity). on_block(seconds_in, seconds_out) after each
    step. Raises AudioError for input that ends inside a sample frame or holds non-finite samples, OutputError
    when a stem cannot be written; no stem file is left behind then.
    """
    if format not in LIVE_FORMATS:
        raise OutputError(f"unknown format {format!r} for a live stream; choose one of {', '.join(LIVE_FORMATS)}")
    if not 0 < block_seconds <= 60:
        raise AudioError(f"the block must be between 0 and 60 seconds, got {block_seconds}")
    stream = separator.stream(sample_rate, channels, low_latency=True)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fmt, subtype = LIVE_FORMATS[format]
    outputs = {stem: folder / f"{_safe_stem(stem)}.{format}" for stem in separator.stems}
    writers: dict[str, AtomicWriter] = {}
    frame_bytes = channels * SAMPLE_BYTES
    block_bytes = max(1, round(block_seconds * sample_rate)) * frame_bytes
    arrivals: list[tuple[int, float]] = []  # (input frames so far, when they had arrived)
    latencies: list[float] = []
    frames_in = frames_out = lag = 0
    started = time.perf_counter()
    try:
        for stem, path in outputs.items():
            writers[stem] = AtomicWriter(path, sample_rate, channels, fmt, subtype)
        while True:
            data = _read_fully(source, block_bytes)
            if len(data) % frame_bytes:
                raise AudioError(f"the input ended inside a sample frame ({len(data) % frame_bytes} stray bytes)")
            if data:
                block = np.frombuffer(data, "<f4").reshape(-1, channels)
                frames_in += len(block)
                arrivals.append((frames_in, time.perf_counter()))
                produced = stream.feed(block)
            else:
                produced = stream.finish()
            frames_out += _write(writers, produced)
            if data:
                latencies += _latencies(arrivals, frames_out)
                lag = max(lag, frames_in - frames_out)
            if on_block:
                on_block(frames_in / sample_rate, frames_out / sample_rate)
            if not data:
                break
        for writer in writers.values():
            writer.finish()
        for writer in writers.values():
            writer.commit()
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    return LiveResult(
        outputs=outputs,
        seconds=frames_in / sample_rate,
        elapsed=time.perf_counter() - started,
        model_latency=stream.latency / sample_rate,
        lag=lag / sample_rate,
        wall_latency_max=max(latencies, default=0.0),
        wall_latency_median=float(np.median(latencies)) if latencies else 0.0,
    )


def _read_fully(source: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end (a pipe hands out what it has)."""
    parts, have = [], 0
    while have < size:
        part = source.read(size - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def _write(writers: dict[str, AtomicWriter], produced: dict[str, np.ndarray]) -> int:
    for stem, writer in writers.items():
        writer.write(produced[stem])
    return len(next(iter(produced.values()))) if produced else 0


def _latencies(arrivals: list[tuple[int, float]], frames_out: int) -> list[float]:
    """For each block whose last frame has now been written, the time since it arrived (and forget it)."""
    now, done = time.perf_counter(), []
    while arrivals and arrivals[0][0] <= frames_out:
        done.append(now - arrivals.pop(0)[1])
    return done
