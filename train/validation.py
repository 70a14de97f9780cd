"""Validation on held-out songs with the paper's SDR: fixed, evenly spaced chunks, mono as L/R mean."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .data import Song
from .metrics import sdr
from .sampling import to_mono, validation_starts

Predict = Callable[[Tensor], Tensor]  # mono chunks (N, 1, T) → estimates (N, 1, T)


def _chunks(song: Song, source: str, starts: list[int], chunk: int) -> np.ndarray:
    return np.stack([to_mono(song.read(source, start, chunk), 0.5) for start in starts]).astype(np.float32)


@torch.no_grad()
def mean_sdr(
    songs: Sequence[Song],
    predict: Predict,
    input_source: str,
    target_source: str,
    chunk: int,
    chunks_per_song: int,
    batch: int,
    device: torch.device,
) -> float | None:
    """Mean over songs of the SDR of `predict(input chunks)` against the target chunks, each song's
    chunks scored together (as the paper scores whole songs); None when no song is long enough."""
    scores = []
    for song in songs:
        starts = validation_starts(song, chunk, chunks_per_song)
        if not starts:
            continue
        inputs = torch.from_numpy(_chunks(song, input_source, starts, chunk))
        estimates = torch.cat([predict(part.to(device)).float().cpu() for part in inputs.split(batch)])
        scores.append(sdr(_chunks(song, target_source, starts, chunk), estimates.numpy()))
    return float(np.mean(scores)) if scores else None
