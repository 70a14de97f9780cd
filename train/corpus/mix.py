"""The mix of a corpus song: per part EQ, compression and panning, a shared room, stem levels, then 16 bits.

Every stem is mixed alone and the mixture is their sum after quantisation, so `mixture = drums + bass + other +
vocals` holds sample for sample, as in MUSDB18-HQ. Arrays are (2, frames) float32 unless said otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve, lfilter, sosfilt

from ..augment import shelve
from .score import Part

REVERB_SEND = {"drums": (0.0, 0.25), "bass": (0.0, 0.1), "other": (0.05, 0.45), "vocals": (0.1, 0.5)}
STEM_SPREAD_DB = 6.0  # stems' levels drawn within ± this of each other
FADE_S = 1.0


def pan(audio: np.ndarray, position: float) -> np.ndarray:
    """`audio` placed at `position` (−1 left … +1 right) by a constant-power pan law, unity gain at the centre."""
    angle = (np.clip(position, -1.0, 1.0) + 1.0) * math.pi / 4.0
    gains = np.array([math.cos(angle), math.sin(angle)], np.float32) * np.float32(math.sqrt(2.0))
    return audio * gains[:, None]


def peaking_section(frequency: float, q: float, gain_db: float, sample_rate: int) -> list[float]:
    """The Audio EQ Cookbook's peaking biquad as one second-order section [b0, b1, b2, 1, a1, a2]: `gain_db` at
    `frequency` Hz, bandwidth `q`, unity far from it."""
    amplitude = 10.0 ** (gain_db / 40.0)
    omega = 2.0 * math.pi * frequency / sample_rate
    alpha = math.sin(omega) / (2.0 * q)
    a0 = 1.0 + alpha / amplitude
    return [
        (1.0 + alpha * amplitude) / a0,
        -2.0 * math.cos(omega) / a0,
        (1.0 - alpha * amplitude) / a0,
        1.0,
        -2.0 * math.cos(omega) / a0,
        (1.0 - alpha / amplitude) / a0,
    ]


def peaking(audio: np.ndarray, sample_rate: int, frequency: float, gain_db: float, q: float) -> np.ndarray:
    """`audio` through `peaking_section`."""
    return sosfilt([peaking_section(frequency, q, gain_db, sample_rate)], audio, axis=-1)


def compress(audio: np.ndarray, sample_rate: int, threshold_db: float, ratio: float, time_s: float) -> np.ndarray:
    """`audio` through a feed-forward compressor: the level (RMS over about `time_s`, both channels) above
    `threshold_db` (dBFS) is divided by `ratio`; the gain is smoothed over the same time, so it neither clicks nor
    pumps at the audio rate. The gain is made up to keep the peak."""
    pole = math.exp(-1.0 / (time_s * sample_rate))
    power = lfilter([1.0 - pole], [1.0, -pole], np.mean(audio.astype(np.float64) ** 2, axis=0))
    level_db = 10.0 * np.log10(np.maximum(power, 1e-12))
    reduction_db = np.minimum(0.0, (threshold_db - level_db) * (1.0 - 1.0 / ratio))
    gain = 10.0 ** (lfilter([1.0 - pole], [1.0, -pole], reduction_db) / 20.0)
    out = audio * gain
    peak_in, peak_out = np.abs(audio).max(), np.abs(out).max()
    return (out * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(np.float32)


def room(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A song's room: a stereo impulse response of decaying, darkening noise after a pre-delay and a few early
    reflections (RT60 0.3–2.5 s), normalised to unit energy per channel."""
    rt60 = rng.uniform(0.3, 2.5)
    frames = int(min(rt60, 2.0) * sample_rate)
    predelay = int(rng.uniform(0.005, 0.04) * sample_rate)
    t = np.arange(frames) / sample_rate
    tail = rng.standard_normal((2, frames)) * np.exp(-6.9 * t / rt60)  # −60 dB at rt60
    pole = math.exp(-2.0 * math.pi * rng.uniform(2000.0, 9000.0) / sample_rate)
    tail = lfilter([1.0 - pole], [1.0, -pole], tail, axis=-1)  # air absorbs the highs
    response = np.zeros((2, predelay + frames))
    response[:, predelay:] = tail
    for _ in range(rng.integers(3, 9)):  # early reflections off the walls
        channel, at = rng.integers(0, 2), predelay + int(rng.uniform(0.002, 0.06) * sample_rate)
        response[channel, min(at, response.shape[1] - 1)] += rng.uniform(0.2, 0.8) * np.abs(tail).max()
    response /= np.sqrt(np.sum(response**2, axis=1, keepdims=True))
    return response.astype(np.float32)


def treat_part(part: Part, audio: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One part's channel strip: random EQ (shelves, a peak), sometimes compression, its level and pan."""
    if rng.random() < 0.6:
        corners = (rng.uniform(80.0, 400.0), rng.uniform(2500.0, 9000.0))
        audio = shelve(audio, sample_rate, rng.uniform(-6.0, 6.0), rng.uniform(-6.0, 6.0), corners)
    if rng.random() < 0.4:
        audio = peaking(
            audio,
            sample_rate,
            math.exp(rng.uniform(math.log(150.0), math.log(6000.0))),
            rng.uniform(-8.0, 8.0),
            rng.uniform(0.5, 3.0),
        )
    if rng.random() < 0.4 and np.abs(audio).max() > 0:
        peak_db = 20.0 * math.log10(float(np.abs(audio).max()))
        audio = compress(
            audio, sample_rate, peak_db - rng.uniform(6.0, 18.0), rng.uniform(2.0, 8.0), rng.uniform(0.005, 0.08)
        )
    audio = audio * np.float32(10.0 ** (part.level_db / 20.0))
    return pan(audio.astype(np.float32), part.pan)


def mix_stems(
    parts: list[tuple[Part, np.ndarray]], rng: np.random.Generator, sample_rate: int, frames: int
) -> dict[str, np.ndarray]:
    """Each stem's (2, frames) float mix of its `parts` (a part and its dry (2, frames) audio): channel strips,
    a reverb send to the song's room, stem levels spread by ±`STEM_SPREAD_DB` and a fade-out."""
    response = room(rng, sample_rate)
    stems: dict[str, np.ndarray] = {}
    sends: dict[str, np.ndarray] = {}
    for part, audio in parts:
        strip = treat_part(part, audio, rng, sample_rate)
        stems[part.stem] = stems.get(part.stem, np.zeros((2, frames), np.float32)) + strip
        low, high = REVERB_SEND[part.stem]
        sends[part.stem] = sends.get(part.stem, np.zeros((2, frames), np.float32)) + strip * rng.uniform(low, high)
    fade = np.ones(frames, np.float32)
    fade_frames = min(frames, int(FADE_S * sample_rate))
    fade[frames - fade_frames :] = np.linspace(1.0, 0.0, fade_frames, dtype=np.float32)
    for stem, dry in stems.items():
        wet = fftconvolve(sends[stem], response, axes=-1)[:, :frames]
        mixed = dry + wet.astype(np.float32)
        level = _active_rms(mixed)
        if level > 0:
            mixed *= np.float32(10.0 ** (rng.uniform(-STEM_SPREAD_DB, STEM_SPREAD_DB) / 20.0) * 0.1 / level)
        stems[stem] = mixed * fade
    return stems


def quantise(stems: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The stems scaled together so the mixture peaks at 0.6–0.97 of full scale, as (frames, 2) int16, and
    "mixture", their exact sum."""
    total = sum(stems.values())
    peak = float(np.abs(total).max()) if isinstance(total, np.ndarray) else 0.0
    scale = rng.uniform(0.6, 0.97) / peak if peak > 0 else 1.0
    quantised = {
        stem: np.clip(np.round(audio.T * scale * 32767.0), -32767, 32767).astype(np.int16)
        for stem, audio in stems.items()
    }
    mixture = np.sum([audio.astype(np.int32) for audio in quantised.values()], axis=0)
    if np.abs(mixture).max() > 32767:  # the stems' roundings cannot add up to this below a 0.97 peak
        raise AssertionError("the mixture of the quantised stems clips")
    quantised["mixture"] = mixture.astype(np.int16)
    return quantised


def _active_rms(audio: np.ndarray, block: int = 4410) -> float:
    """The RMS over the `block`-frame blocks (0.1 s at 44.1 kHz) that are not silent (within 40 dB of the loudest): a stem that rests half
    the song is levelled by where it plays."""
    frames = audio.shape[1] // block * block
    if frames == 0:
        return float(np.sqrt(np.mean(audio**2)))
    blocks = np.mean(audio[:, :frames].reshape(2, -1, block) ** 2, axis=(0, 2))
    loud = blocks[blocks > blocks.max() * 1e-4]
    return float(np.sqrt(np.mean(loud))) if loud.size else 0.0
