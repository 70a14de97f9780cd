"""Finding and reading the songs of a training corpus, in MUSDB18-HQ's layout or the paper's (`find_songs`), by
seeking and resampling on read; every problem with the files is a `CorpusError`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from unmix.runtime.manifest import STEMS

SOURCES = ("mixture", *STEMS)
UNMIX_IDS = {source: index for index, source in enumerate(SOURCES)}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
# Native samples read beyond each end of a chunk before resampling, so the filter has real signal there.
RESAMPLE_MARGIN = 64


class CorpusError(ValueError):
    """Training audio that is missing, unreadable or inconsistent."""


def _reason(error: Exception) -> str:
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


@dataclass(frozen=True)
class AudioFile:
    """One audio file as soundfile describes it."""

    path: Path
    sample_rate: int
    frames: int
    channels: int

    @classmethod
    def probe(cls, path: Path) -> AudioFile:
        try:
            info = sf.info(str(path))
        except Exception as error:  # soundfile raises LibsndfileError, RuntimeError or TypeError
            raise CorpusError(f"{path}: unreadable audio ({_reason(error)})") from None
        if info.channels not in (1, 2):
            raise CorpusError(f"{path}: {info.channels} channels; expected mono or stereo")
        return cls(path, int(info.samplerate), int(info.frames), int(info.channels))

    def read(self, start: int, frames: int) -> np.ndarray:
        """Native samples [start, start + frames) as (channels, frames) float32, zero-padded past the end."""
        try:
            data, _ = sf.read(str(self.path), start=start, frames=frames, dtype="float32", always_2d=True)
        except Exception as error:
            raise CorpusError(f"{self.path}: unreadable audio ({_reason(error)})") from None
        return _fit(np.ascontiguousarray(data.T), frames)


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    """Crop or zero-pad the last axis to `frames`."""
    if x.shape[-1] >= frames:
        return x[..., :frames]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, frames - x.shape[-1])])


@dataclass(frozen=True)
class Song:
    """A song's source files (all with one rate and length), read at `sample_rate`."""

    name: str
    files: dict[str, AudioFile]
    sample_rate: int

    @property
    def native_rate(self) -> int:
        return next(iter(self.files.values())).sample_rate

    @property
    def frames(self) -> int:
        """Length in samples at `sample_rate`."""
        return next(iter(self.files.values())).frames * self.sample_rate // self.native_rate

    def read(self, source: str, start: int, frames: int) -> np.ndarray:
        """Samples [start, start + frames) of `source` at `sample_rate`: (channels, frames) float32."""
        file = self.files[source]
        if file.sample_rate == self.sample_rate:
            return file.read(start, frames)
        ratio = file.sample_rate / self.sample_rate
        first = max(0, math.floor(start * ratio) - RESAMPLE_MARGIN)
        last = min(file.frames, math.ceil((start + frames) * ratio) + RESAMPLE_MARGIN)
        native = file.read(first, max(last - first, 1))
        resampled = soxr.resample(np.ascontiguousarray(native.T), file.sample_rate, self.sample_rate, quality="HQ")
        offset = round(start - first / ratio)
        return _fit(np.ascontiguousarray(resampled.T[:, offset:]), frames)


def find_audio(folder: str | Path, source: str) -> Path:
    """`folder/<source>.<ext>` (a song's "mixture" or one of its stems) for the first extension present, or the
    .wav name when none is."""
    folder = Path(folder)
    for extension in AUDIO_EXTENSIONS:
        if (folder / f"{source}{extension}").is_file():
            return folder / f"{source}{extension}"
    return folder / f"{source}.wav"


def song_folders(root: str | Path, split: str) -> list[Path]:
    """The song folders of a MUSDB18-HQ-layout split, `root/<split>/<song>/`, sorted by name; [] when there is no
    `root/<split>` folder. Which files a folder holds is for the caller to check (`find_audio`)."""
    folder = Path(root) / split
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def _musdb_candidates(root: Path, split: str) -> list[tuple[str, dict[str, Path]]]:
    folders = song_folders(root, split)
    return [(folder.name, {source: find_audio(folder, source) for source in SOURCES}) for folder in folders]


def _unmix_candidates(root: Path, split: str) -> list[tuple[str, dict[str, Path]]]:
    mixture_folder = root / f"{split}_0"
    mixtures = sorted(p for p in mixture_folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    candidates = []
    for mixture in mixtures:
        relative = mixture.relative_to(root).as_posix()
        files = {source: root / relative.replace("_0", f"_{index}") for source, index in UNMIX_IDS.items()}
        candidates.append((mixture.relative_to(mixture_folder).with_suffix("").as_posix(), files))
    return candidates


def _check_song(name: str, paths: dict[str, Path], sources: Iterable[str], sample_rate: int) -> Song:
    files: dict[str, AudioFile] = {}
    for source in sources:
        if not paths[source].is_file():
            raise CorpusError(f"song {name!r}: missing {source} ({paths[source]})")
        files[source] = AudioFile.probe(paths[source])
    shapes = {source: (file.sample_rate, file.frames) for source, file in files.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{source} {frames} frames at {rate} Hz" for source, (rate, frames) in shapes.items())
        raise CorpusError(f"song {name!r}: unequal lengths or rates: {detail}")
    return Song(name, files, sample_rate)


def find_songs(root: str | Path, sources: Iterable[str], sample_rate: int, split: str = "train") -> list[Song]:
    """The songs of `split` under `root` (either layout), each checked to have readable, equally long `sources`.

    Layouts under a data root:
      musdb  ROOT/<split>/<song>/{mixture,drums,bass,other,vocals}.wav   (the official MUSDB18-HQ tree)
      unmix  ROOT/<split>_0/... holds the mixtures; the file of source `id` (1 drums, 2 bass, 3 other
             — the paper's "rest" —, 4 vocals) is the mixture's path with `_0` replaced by `_<id>`
             (the paper's rule, applied here to the path below ROOT so that ROOT itself may contain `_0`).
    Songs are read by seeking (`Song.read`), never whole, and resampled with soxr where a file's rate differs.
    """
    root = Path(root)
    sources = [source for source in SOURCES if source in set(sources)]
    if not root.is_dir():
        raise CorpusError(f"{root}: no such data folder")
    if (root / split).is_dir():
        candidates = _musdb_candidates(root, split)
    elif (root / f"{split}_0").is_dir():
        candidates = _unmix_candidates(root, split)
    else:
        raise CorpusError(
            f"{root}: neither the MUSDB18-HQ layout ({split}/<song>/mixture.wav …) "
            f"nor the unmix layout ({split}_0 … {split}_4)"
        )
    if not candidates:
        raise CorpusError(f"{root}: no songs in the {split!r} split")
    return [_check_song(name, paths, sources, sample_rate) for name, paths in candidates]


def split_songs(songs: list[Song], validation: int) -> tuple[list[Song], list[Song]]:
    """(training, validation) songs; the `validation` held-out songs are those whose names hash lowest.

    Hashing the name keeps the choice stable when songs are added or listed in another order.
    """
    if not 0 <= validation < len(songs):
        raise CorpusError(f"cannot hold out {validation} of {len(songs)} songs for validation")
    ranked = sorted(songs, key=lambda song: hashlib.sha256(song.name.encode()).hexdigest())
    held_out = {song.name for song in ranked[:validation]}
    return [s for s in songs if s.name not in held_out], [s for s in songs if s.name in held_out]


def default_validation_count(songs: int) -> int:
    """About a tenth of the songs, at least one when there are two or more."""
    return 0 if songs < 2 else max(1, round(songs / 10))
