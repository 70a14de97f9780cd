"""Augmentation of training examples beyond the paper's shift and blend: per-stem gain, polarity and EQ, and a
speed change (tempo and pitch together), each switched on by its own option and off by default."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soxr

from .data import STEMS

SHELF_HZ = (200.0, 4000.0)  # the low and the high shelf's corner frequency


@dataclass(frozen=True)
class Augmentation:
    """What to change in each example, drawn from the example's own random generator.

    gain_db: each stem's gain, uniform in ±gain_db dB.
    polarity: each stem's sign flipped with probability ½.
    eq_db: each stem through a low and a high shelf (`SHELF_HZ`), each of a gain uniform in ±eq_db dB.
    speed: the whole example played faster or slower by a factor uniform in [1 − speed, 1 + speed] (resampled:
        tempo and pitch move together, as a turntable's).

    The per-stem changes keep an example consistent when its mixture is summed from its changed stems (`ChunkSampler`).
    """

    gain_db: float = 0.0
    polarity: bool = False
    eq_db: float = 0.0
    speed: float = 0.0

    def __post_init__(self) -> None:
        if self.gain_db < 0 or self.eq_db < 0:
            raise ValueError("gain and EQ ranges are in dB and must not be negative")
        if not 0.0 <= self.speed < 0.5:
            raise ValueError(f"speed is a relative change in [0, 0.5) (got {self.speed})")

    @property
    def per_stem(self) -> bool:
        """Whether stems change one by one (so a mixture must be summed from them)."""
        return self.gain_db > 0 or self.polarity or self.eq_db > 0

    def draw_speed(self, rng: np.random.Generator) -> float:
        """The example's speed factor (1 when off; draws nothing then)."""
        return float(rng.uniform(1.0 - self.speed, 1.0 + self.speed)) if self.speed > 0 else 1.0

    def change_stems(self, rng: np.random.Generator, audio: dict[str, np.ndarray], sample_rate: int) -> None:
        """Apply the per-stem changes to the stems in `audio` ({source: (channels, frames)}, in place); a mixture
        is for the caller to sum from them. Draws nothing when no per-stem change is on."""
        if not self.per_stem:
            return
        for stem in STEMS:
            if stem not in audio:
                continue
            scale = 10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0) if self.gain_db > 0 else 1.0
            if self.polarity and rng.random() < 0.5:
                scale = -scale
            changed = audio[stem] * np.float32(scale)
            if self.eq_db > 0:
                low, high = rng.uniform(-self.eq_db, self.eq_db, size=2)
                changed = shelve(changed, sample_rate, low, high)
            audio[stem] = changed.astype(np.float32, copy=False)


def shelve(
    audio: np.ndarray, sample_rate: int, low_db: float, high_db: float, corners: tuple[float, float] = SHELF_HZ
) -> np.ndarray:
    """(channels, frames) audio through a low shelf of `low_db` and a high shelf of `high_db` at `corners` (Hz;
    the Audio EQ Cookbook's shelving biquads, slope 1)."""
    from scipy.signal import lfilter

    for frequency, gain_db, kind in ((corners[0], low_db, "low"), (corners[1], high_db, "high")):
        b, a = _shelf(frequency / sample_rate, gain_db, kind)
        audio = lfilter(b, a, audio, axis=-1)
    return audio


def _shelf(frequency: float, gain_db: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Biquad coefficients (b, a), a[0] = 1, of a shelf at `frequency` (a fraction of the sample rate)."""
    gain = 10.0 ** (gain_db / 40.0)
    omega = 2.0 * math.pi * frequency
    cos, alpha = math.cos(omega), math.sin(omega) / 2.0 * math.sqrt(2.0)  # slope 1: Q = 1/√2
    root = 2.0 * math.sqrt(gain) * alpha
    sign = 1.0 if kind == "low" else -1.0
    b = gain * np.array(
        [
            (gain + 1) - sign * (gain - 1) * cos + root,
            sign * 2 * ((gain - 1) - sign * (gain + 1) * cos),
            (gain + 1) - sign * (gain - 1) * cos - root,
        ]
    )
    a = np.array(
        [
            (gain + 1) + sign * (gain - 1) * cos + root,
            -sign * 2 * ((gain - 1) + sign * (gain + 1) * cos),
            (gain + 1) + sign * (gain - 1) * cos - root,
        ]
    )
    return b / a[0], a / a[0]


def change_speed(audio: np.ndarray, factor: float, frames: int) -> np.ndarray:
    """(channels, n) audio played `factor` times as fast, as (channels, frames): resampled from n to about
    n / factor samples, then cut or zero-padded to exactly `frames`."""
    played = soxr.resample(np.ascontiguousarray(audio.T), factor, 1.0, quality="HQ").T
    if played.shape[1] >= frames:
        return np.ascontiguousarray(played[:, :frames], dtype=np.float32)
    return np.pad(played, ((0, 0), (0, frames - played.shape[1]))).astype(np.float32)
