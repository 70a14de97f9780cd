"""Songs of a MUSDB18-HQ-layout folder: `ROOT/<subset>/<song>/{mixture,drums,bass,other,vocals}.wav`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from unmix.runtime.manifest import STEMS
from unmix.train.data import CorpusError, find_audio, song_folders


@dataclass
class Song:
    name: str
    sample_rate: int
    mixture: np.ndarray  # (frames, channels) float32
    stems: dict[str, np.ndarray]  # stem → (frames, channels) float32

    @property
    def seconds(self) -> float:
        return self.mixture.shape[0] / self.sample_rate


def subset_songs(root: str | Path, subset: str = "test") -> list[Path]:
    """The song folders of `root/<subset>` (`unmix.train.data.song_folders`); CorpusError when there are none."""
    folder = Path(root) / subset
    if not folder.is_dir():
        raise CorpusError(f"{folder}: no such folder (expected the MUSDB18-HQ layout ROOT/{subset}/<song>/*.wav)")
    songs = song_folders(root, subset)
    if not songs:
        raise CorpusError(f"{folder}: no song folders")
    return songs


def read_song(folder: str | Path, stems: tuple[str, ...] = STEMS, max_seconds: float | None = None) -> Song:
    """Mixture and stems of one song, optionally only its first `max_seconds`."""
    folder = Path(folder)
    audio, rates = {}, set()
    for name in ("mixture", *stems):
        path = find_audio(folder, name)
        if not path.is_file():
            raise CorpusError(f"{folder}: missing {path.name}")
        try:
            info = sf.info(str(path))
            frames = info.frames if max_seconds is None else min(info.frames, int(max_seconds * info.samplerate))
            audio[name], rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise CorpusError(f"{path}: unreadable audio: {error}") from None
        rates.add(rate)
    shapes = {name: value.shape for name, value in audio.items()}
    if len(set(shapes.values())) != 1 or len(rates) != 1:
        raise CorpusError(f"{folder}: files differ in length, channels or sample rate: {shapes}, rates {sorted(rates)}")
    mixture = audio.pop("mixture")
    return Song(folder.name, rates.pop(), mixture, audio)


def write_synthetic_songs(root: str | Path, songs: int = 2, seconds: float = 3.0, subset: str = "test") -> Path:
    """A small MUSDB18-HQ-layout folder of synthetic songs (export's parity signal, cut into `songs`
    excerpts), for trying the benchmark end to end: stereo float wavs, mixture = Σ stems exactly."""
    from unmix.export.audio import synthetic_audio

    audio = synthetic_audio(44100, 8, segments=songs, seconds=seconds)
    for index, mixture in enumerate(audio.mixtures):
        folder = Path(root) / subset / f"Synthetic {index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / "mixture.wav", mixture.T, audio.sample_rate, subtype="FLOAT")
        for stem in STEMS:
            sf.write(folder / f"{stem}.wav", audio.stems[stem][index].T, audio.sample_rate, subtype="FLOAT")
    return Path(root)
