"""Audio for parity checks and int8 calibration: MUSDB-layout folders, single files, or a synthetic song.

Items are (channels, time) float32 arrays; each channel is one batch item for the graphs, as in the
runtime. Lengths are whole multiples of the hop, because the graphs do not pad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from unmix.runtime.manifest import STEMS
from unmix.train.data import AUDIO_EXTENSIONS, find_audio, song_folders

from .checks import ExportError


@dataclass
class ParityAudio:
    """Mixtures to compare on and, where known, their true stems (same shapes)."""

    description: str
    mixtures: list[np.ndarray]
    stems: dict[str, list[np.ndarray]] = field(default_factory=dict)
    synthetic: bool = False
    sample_rate: int = 44100

    @property
    def seconds(self) -> float:
        return sum(m.shape[-1] for m in self.mixtures) / self.sample_rate


def has_mixture(folder: Path) -> bool:
    """Whether `folder` holds a MUSDB-layout song's mixture (`mixture.<ext>`)."""
    return find_audio(folder, "mixture").is_file()


def mixture_songs(root: Path) -> list[Path]:
    """Folders holding a mixture: `root` itself, its children, or MUSDB's test songs then its training songs."""
    if has_mixture(root):
        return [root]
    found = sorted(folder for folder in root.iterdir() if folder.is_dir() and has_mixture(folder))
    for split in ("test", "train"):
        found += [folder for folder in song_folders(root, split) if has_mixture(folder)]
    return found


def read_segment(path: Path, sample_rate: int, start: float, seconds: float) -> np.ndarray:
    """`seconds` of `path` from `start` (fractions of the file's duration), as (channels, time) at `sample_rate`."""
    try:
        with sf.SoundFile(str(path)) as audio:
            frames = min(audio.frames, math.ceil(seconds * audio.samplerate))
            audio.seek(int((audio.frames - frames) * start))
            data = audio.read(frames, dtype="float32", always_2d=True)
            rate = audio.samplerate
    except (sf.LibsndfileError, RuntimeError) as error:
        raise ExportError(f"{path}: cannot read audio: {error}") from None
    if rate != sample_rate:
        data = soxr.resample(data, rate, sample_rate)
    return np.ascontiguousarray(data.T, dtype=np.float32)


def _crop(items: list[np.ndarray], hop: int) -> list[np.ndarray]:
    length = min(item.shape[-1] for item in items) // hop * hop
    if length == 0:
        raise ExportError("audio shorter than one hop")
    return [item[..., :length] for item in items]


def load_parity_audio(
    source: str | Path | None, sample_rate: int, hop: int, *, segments: int = 4, seconds: float = 6.0
) -> ParityAudio:
    """Parity audio from a MUSDB-layout folder (with stems), a folder of audio files or one file.

    Without `source`, a deterministic synthetic song (`synthetic_audio`). Segments are taken at evenly
    spaced positions, spread over the songs (MUSDB's test split first).
    """
    if source is None:
        return synthetic_audio(sample_rate, hop, segments=segments, seconds=seconds)
    source = Path(source)
    if not source.exists():
        raise ExportError(f"{source}: no such audio file or folder")
    songs = mixture_songs(source) if source.is_dir() else []
    if songs:
        files = [find_audio(song, "mixture") for song in songs]
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    else:
        files = [source]
    if not files:
        raise ExportError(f"{source}: no audio files and no MUSDB-layout songs (<song>/mixture.wav)")
    audio = ParityAudio(f"{len(files)} file(s) from {source}", [], sample_rate=sample_rate)
    per_file = -(-segments // len(files))
    for index in range(segments):
        file, position = files[index % len(files)], (index // len(files) + 1) / (per_file + 1)
        mixture = read_segment(file, sample_rate, position, seconds)
        stems = {}
        for stem in STEMS if songs else ():
            if (path := find_audio(file.parent, stem)).is_file():
                stems[stem] = read_segment(path, sample_rate, position, seconds)
        if stems and {s.shape for s in stems.values()} != {mixture.shape}:
            raise ExportError(f"{file.parent}: stems and mixture differ in length or channels")
        mixture, *cropped = _crop([mixture, *stems.values()], hop)
        audio.mixtures.append(mixture)
        for stem, item in zip(stems, cropped, strict=False):
            audio.stems.setdefault(stem, []).append(item)
    if songs:
        audio.description = f"{segments} × {seconds:g} s from {min(segments, len(files))} song(s) of {source}"
    return audio


def calibration_chunks(
    root: str | Path, sample_rate: int, hop: int, *, count: int = 32, seconds: float = 2.0, seed: int = 0
) -> list[np.ndarray]:
    """`count` mono chunks of real mixtures from a MUSDB-layout folder (training split preferred)."""
    root = Path(root)
    songs = [song for song in song_folders(root, "train") if has_mixture(song)] or mixture_songs(root)
    if not songs:
        raise ExportError(f"{root}: no MUSDB-layout songs (<song>/mixture.wav) to calibrate on")
    rng = np.random.default_rng(seed)
    chunks = []
    for index in range(count):
        song = songs[index % len(songs)] if count >= len(songs) else songs[rng.integers(len(songs))]
        segment = read_segment(find_audio(song, "mixture"), sample_rate, float(rng.uniform()), seconds)
        channel = segment[rng.integers(segment.shape[0])]
        chunks.append(channel[: channel.shape[-1] // hop * hop])
    return chunks


def synthetic_audio(sample_rate: int, hop: int, *, segments: int = 4, seconds: float = 6.0) -> ParityAudio:
    """A deterministic synthetic stereo song (120 BPM, four stems) cut into `segments` items.

    Not music anyone recorded: decaying sine kicks, noise snares and hats, a harmonic bass line,
    chord pads and a vibrato lead. It exercises the graphs with music-like structure when no real
    audio is given; reports label it as synthetic.
    """
    rng = np.random.default_rng(1234)
    length = int(seconds * sample_rate) // hop * hop
    total = length * segments
    t = np.arange(total) / sample_rate
    beat = 0.5
    phase = (t % beat) / beat  # position within the beat
    beat_index = (t // beat).astype(int)

    def tone(freq: np.ndarray, harmonics: int, rolloff: float) -> np.ndarray:
        angle = 2 * np.pi * np.cumsum(freq) / sample_rate
        wave = sum(np.sin(h * angle) * rolloff ** (h - 1) for h in range(1, harmonics + 1))
        assert isinstance(wave, np.ndarray)  # harmonics >= 1, so never sum()'s bare start value 0
        return wave

    drums = np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-phase * 20)) / sample_rate) * np.exp(-phase * 8)
    noise = rng.standard_normal(total)
    drums += 0.5 * noise * np.exp(-phase * 25) * (beat_index % 2 == 1)  # snare on 2 and 4
    drums += 0.15 * np.diff(noise, prepend=0) * np.exp(-((t % (beat / 2)) / beat) * 60)  # eighth-note hats
    roots = np.array([45, 41, 48, 43])[(beat_index // 4) % 4]  # A F C G, one chord per bar
    bass = 0.5 * tone(440 * 2 ** ((roots - 69) / 12), 5, 0.5) * np.exp(-((t % (beat / 2)) / beat) * 3)
    other = sum(0.12 * tone(440 * 2 ** ((roots + 24 + step - 69) / 12), 4, 0.4) for step in (0, 4, 7)) * (
        0.6 + 0.4 * np.cos(2 * np.pi * t / (4 * beat))
    )
    melody = roots + 36 + np.array([0, 2, 4, 7, 4, 2, 0, -1])[beat_index % 8]
    vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * t)
    vocals = 0.25 * tone(440 * 2 ** ((melody - 69) / 12) * vibrato, 6, 0.6) * ((beat_index // 8) % 2 == 0)
    pans = {"drums": 0.5, "bass": 0.5, "other": 0.3, "vocals": 0.6}
    stems = {}
    for name, signal in (("drums", drums), ("bass", bass), ("other", other), ("vocals", vocals)):
        stems[name] = np.stack([signal * (1 - pans[name]), signal * pans[name]]) * 2
    peak = np.abs(sum(stems.values())).max()
    stems = {name: (stem * 0.8 / peak).astype(np.float32) for name, stem in stems.items()}
    mixture = sum(stems.values())
    assert isinstance(mixture, np.ndarray)  # four stems, so never sum()'s bare start value 0
    audio = ParityAudio(
        f"synthetic stereo song (not real audio): {segments} × {seconds:g} s",
        [],
        synthetic=True,
        sample_rate=sample_rate,
    )
    for index in range(segments):
        cut = slice(index * length, (index + 1) * length)
        audio.mixtures.append(mixture[:, cut])
        for name, stem in stems.items():
            audio.stems.setdefault(name, []).append(stem[:, cut])
    return audio
