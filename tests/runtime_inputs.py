"""Audio files for the runtime tests: good ones in every format, and the bad and unusual cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((frames, channels))).astype(np.float32)


def write(path: Path, frames: int = 4000, channels: int = 2, rate: int = 44100, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), noise(frames, channels), rate, **options)
    return path


def _truncated(path: Path, fmt: str) -> Path:
    write(path, frames=44100, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nan_wav(path: Path) -> Path:
    audio = noise(30_000, 2)
    audio[22_050, 0] = np.nan
    sf.write(str(path), audio, 44100, subtype="FLOAT")
    return path


def _zero_length(path: Path) -> Path:
    sf.write(str(path), np.zeros((0, 2), np.float32), 44100)
    return path


def _empty_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("no audio here")
    return path


# name → (make the input under a folder, words the one-line error must contain)
BAD_INPUTS = {
    "missing": (lambda folder: folder / "missing.wav", "no such file"),
    "non-audio": (lambda folder: _write_text(folder / "notes.wav"), "not a readable audio file"),
    "truncated-wav": (lambda folder: _truncated(folder / "cut.wav", "WAV"), "truncated"),
    "truncated-flac": (lambda folder: _truncated(folder / "cut.flac", "FLAC"), "truncated"),
    "truncated-ogg": (lambda folder: _truncated(folder / "cut.ogg", "OGG"), "truncated"),
    "truncated-mp3": (lambda folder: _truncated(folder / "cut.mp3", "MP3"), "truncated"),
    "zero-length": (lambda folder: _zero_length(folder / "empty.wav"), "zero-length"),
    "nan": (
        lambda folder: _nan_wav(folder / "nan.wav"),
        r"non-finite sample \(nan\) at frame 22050 \(0\.500 s\), channel 1",
    ),
}
FOLDER_WITHOUT_AUDIO = (_empty_folder, "no audio files")


def _write_text(path: Path) -> Path:
    path.write_text("this is not audio\n" * 50)
    return path
