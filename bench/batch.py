"""Throughput of `unmix batch` against `unmix separate` on one machine: what the Ray engine costs or gains.

Each row separates the same tracks from scratch in a fresh process, as a user would: `unmix separate FOLDER` (one
process, the separator's default threads) and `unmix batch FOLDER` on a local Ray instance with the workers and
threads given. Reported per row: wall time (Ray's start-up and every worker's model load included), audio hours
per hour, and the ratio of throughputs against `unmix separate`.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from unmix.train.data import find_audio

from .musdb import subset_songs
from .report import table
from .streaming import _run


@dataclass
class BatchRow:
    """One command's measurement."""

    name: str
    command: str
    wall_s: float
    audio_s: float
    audio_hours_per_hour: float
    throughput_ratio: float | None = None


def corpus_tracks(root: Path, subset: str, count: int, folder: Path) -> list[Path]:
    """The mixtures of the first `count` songs of a MUSDB-layout folder (`musdb.subset_songs`), linked into `folder`
    under their songs' names (so that their stems do not all go to `mixture/`)."""
    folder.mkdir(parents=True, exist_ok=True)
    tracks = []
    for song in subset_songs(root, subset)[:count]:
        link = folder / f"{song.name}.wav"
        link.symlink_to(find_audio(song, "mixture").resolve())
        tracks.append(link)
    return tracks


def measure(tracks: list[Path], *, bundle: str = "default", layouts: list[tuple[int, int]]) -> list[BatchRow]:
    """Time `unmix separate` and `unmix batch` (one row per (workers, threads) in `layouts`) on `tracks`, one
    folder of audio files."""
    folder = tracks[0].parent
    audio_s = sum(sf.info(str(track)).duration for track in tracks)
    unmix = str(Path(sys.executable).parent / "unmix")  # the console script installed beside this Python
    rows: list[BatchRow] = []
    with tempfile.TemporaryDirectory(prefix="unmix-bench-batch-") as scratch:
        command = [unmix, "separate", str(folder), "-o", f"{scratch}/separate", "-q", "--bundle", bundle]
        _, wall = _run(command)
        rows.append(BatchRow("unmix separate", shlex.join(command), wall, audio_s, audio_s / wall))
        for workers, threads in layouts:
            out = f"{scratch}/batch-{workers}x{threads}"
            command = [unmix, "batch", str(folder), "-o", out, "-q", "--bundle", bundle]
            command += ["--workers", str(workers), "--threads", str(threads)]
            _, wall = _run(command)
            name = f"unmix batch, {workers} worker{'s' if workers > 1 else ''} × {threads} thread{'s' if threads > 1 else ''}"
            rows.append(BatchRow(name, shlex.join(command), wall, audio_s, audio_s / wall))
    for row in rows[1:]:
        row.throughput_ratio = row.audio_hours_per_hour / rows[0].audio_hours_per_hour
    return rows


def markdown(rows: list[BatchRow], *, tracks: int, machine: str, command: str, date: str) -> str:
    lines = [
        f"# unmix batch against unmix separate: {tracks} tracks, {rows[0].audio_s / 60:.1f} min of audio",
        "",
        f"{machine}; {date}; `{command}`",
        "",
    ]
    lines += table(
        ["command", "wall", "audio hours per hour", "throughput ÷ unmix separate"],
        (
            [row.name, f"{row.wall_s:.1f} s", f"{row.audio_hours_per_hour:.2f}", _times(row.throughput_ratio)]
            for row in rows
        ),
    )
    return "\n".join(lines) + "\n"


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}×" if ratio is not None else "–"


def to_json(rows: list[BatchRow]) -> list[dict]:
    return [asdict(row) for row in rows]
