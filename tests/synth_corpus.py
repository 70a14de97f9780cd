"""Small synthetic multitrack corpora for tests, in MUSDB18-HQ's layout or the paper's `train_0..4`.

Each stem is a distinct, easily told apart signal — drums: decaying noise bursts on a beat;
bass: low sine notes; other: three-note chords; vocals: a vibrato harmonic tone — panned
differently to left and right, and the mixture is their exact sum (float wav files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from unmix.runtime.manifest import STEMS

UNMIX_IDS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}


def _notes(rng: np.random.Generator, count: int, low: int, high: int) -> np.ndarray:
    """Frequencies (Hz) of `count` random MIDI notes in [low, high)."""
    return 440.0 * 2.0 ** ((rng.integers(low, high, count) - 69) / 12)


def _segments(frames: int, length: int):
    """(start, end) of consecutive segments of `length` samples covering `frames`."""
    for start in range(0, frames, length):
        yield start, min(frames, start + length)


def _drums(rng, frames, sample_rate):
    out = np.zeros(frames)
    beat = int(sample_rate * rng.uniform(0.2, 0.3))
    for start, end in _segments(frames, beat):
        t = np.arange(end - start) / sample_rate
        out[start:end] = rng.standard_normal(end - start) * np.exp(-t / 0.03) * 0.5
    return out


def _bass(rng, frames, sample_rate):
    out = np.zeros(frames)
    note = int(sample_rate * 0.5)
    for (start, end), frequency in zip(_segments(frames, note), _notes(rng, frames // note + 1, 33, 48), strict=False):
        t = np.arange(end - start) / sample_rate
        out[start:end] = 0.4 * np.sin(2 * np.pi * frequency * t) * np.minimum(1, 20 * t)
    return out


def _other(rng, frames, sample_rate):
    out = np.zeros(frames)
    length = sample_rate
    for start, end in _segments(frames, length):
        t = np.arange(end - start) / sample_rate
        root = _notes(rng, 1, 57, 69)[0]
        chord = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, 1.26, 1.5))
        out[start:end] = 0.12 * chord * np.minimum(1, 30 * t)
    return out


def _vocals(rng, frames, sample_rate):
    out = np.zeros(frames)
    note = int(sample_rate * 0.4)
    for (start, end), frequency in zip(_segments(frames, note), _notes(rng, frames // note + 1, 62, 76), strict=False):
        t = np.arange(end - start) / sample_rate
        # 3% vibrato at 5.5 Hz: the phase integrates f0 · (1 + 0.03 · sin(2π · 5.5 · t)).
        phase = 2 * np.pi * frequency * t - 0.03 * frequency / 5.5 * np.cos(2 * np.pi * 5.5 * t)
        tone = sum(np.sin(h * phase) / h**1.5 for h in range(1, 6))
        out[start:end] = 0.2 * tone * np.minimum(1, 40 * t) * np.minimum(1, 40 * t[::-1])
    return out


GENERATORS = {"drums": _drums, "bass": _bass, "other": _other, "vocals": _vocals}


def make_song(rng: np.random.Generator, seconds: float, sample_rate: int = 44100) -> dict[str, np.ndarray]:
    """Stereo float32 (frames, 2) audio for the four stems and their sum, "mixture"."""
    frames = int(seconds * sample_rate)
    sources = {}
    for stem in STEMS:
        mono = GENERATORS[stem](rng, frames, sample_rate)
        pan = rng.uniform(0.15, 0.85)  # distinct left/right balance per stem, so the stereo blend matters
        sources[stem] = np.stack([np.sqrt(pan) * mono, np.sqrt(1 - pan) * mono], axis=1).astype(np.float32)
    sources["mixture"] = sum(sources[stem] for stem in STEMS).astype(np.float32)
    return sources


def write_song(
    root: Path, name: str, sources: dict[str, np.ndarray], sample_rate: int, layout: str, split: str = "train"
) -> None:
    """Write one song's sources in `layout` ("musdb" or "unmix") under `root`."""
    for source, audio in sources.items():
        if layout == "musdb":
            path = root / split / name / f"{source}.wav"
        elif layout == "unmix":
            path = root / f"{split}_{UNMIX_IDS[source]}" / f"{name}.wav"
        else:
            raise ValueError(f"unknown layout {layout!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, sample_rate, subtype="FLOAT")


def make_corpus(
    root: str | Path,
    songs: int = 5,
    seconds: float = 3.0,
    sample_rate: int = 44100,
    layout: str = "musdb",
    seed: int = 0,
) -> Path:
    """Write `songs` synthetic songs under `root` in `layout`; returns `root` (the `--data` folder)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for index in range(songs):
        write_song(root, f"Song{index:02d}", make_song(rng, seconds, sample_rate), sample_rate, layout)
    return root
