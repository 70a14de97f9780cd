"""Normalisation statistics of the training audio, measured once at the start of a run.

Jukebox's calculate_bandwidth: `l2` is the variance and `l1` the mean |x| over every sample of
stereo chunks; `spec` is the mean over chunks of ‖|STFT|‖_F of the channel mean (n_fft 2048, hop 256,
window 1536). Phase 1 divides its losses by `l2` and `spec`. Jukebox visits shifted chunks, so its
values drift by a few percent between runs; ours come from fixed chunks and are reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import CorpusError
from .losses import stft_magnitude

STATS_STFT = (2048, 256, 1536)  # (n_fft, hop, window)


@dataclass(frozen=True)
class DataStats:
    l2: float
    l1: float
    spec: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataStats:
        return cls(float(data["l2"]), float(data["l1"]), float(data["spec"]))


def measure_stats(chunks: Iterable[np.ndarray]) -> DataStats:
    """Statistics of (channels, T) chunks; silence, which cannot normalise a loss, is a CorpusError."""
    count = total = total_sq = total_abs = spec_total = 0.0
    chunk_count = 0
    for chunk in chunks:
        samples = chunk.astype(np.float64)
        count += samples.size
        total += samples.sum()
        total_sq += np.square(samples).sum()
        total_abs += np.abs(samples).sum()
        mono = torch.from_numpy(samples.mean(axis=0)).unsqueeze(0)
        spec_total += float(stft_magnitude(mono, *STATS_STFT).norm())
        chunk_count += 1
    if chunk_count == 0:
        raise CorpusError("no audio to measure normalisation statistics on")
    mean = total / count
    stats = DataStats(l2=total_sq / count - mean**2, l1=total_abs / count, spec=spec_total / chunk_count)
    if not stats.l2 > 0 or not stats.spec > 0:
        raise CorpusError(f"the training audio is silent (variance {stats.l2:g}); nothing to normalise by")
    return stats
