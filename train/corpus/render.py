"""A corpus song from score to files: composed, played, sung, mixed, and written in the MUSDB18-HQ layout.

Each song is a pure function of (seed, index, seconds, pool): a corpus renders in any order, on any number of
workers, and a killed run resumes where it stopped (a song's folder appears whole or not at all).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import STEMS, CorpusError
from . import fluidsynth, singers
from .compose import STYLES, compose
from .mix import mix_stems, quantise
from .resources import POOLS, Pool, check_allowed, find_soundfonts
from .score import Song

SAMPLE_RATE = 44100
_PARTIAL = ".partial-"  # a song folder being written: `.<name>.partial-<pid>`


@dataclass(frozen=True)
class SongJob:
    """One song to render: its folder, its seed (corpus seed, index), length and pool."""

    folder: Path
    seed: tuple[int, int]
    seconds: float
    pool: Pool
    soundfonts: tuple[Path, ...]


def play(song: Song, soundfont: Path, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> list:
    """Every part of `song` as (part, dry (2, frames) float32 audio): General MIDI parts by FluidSynth from
    `soundfont`, sung parts by their singer."""
    frames = int(round(song.seconds * sample_rate))
    played = []
    with fluidsynth.SoundFontSynth(soundfont, sample_rate) as synth:
        for part in song.parts:
            if part.instrument.kind == "singer":
                voice = singers.sing(part.notes, part.instrument.voice, rng, sample_rate, frames)
                audio = np.stack([voice, voice])
            else:
                audio = synth.render(part.instrument, part.notes, frames)
            played.append((part, audio))
    return played


def make_song(job: SongJob, sample_rate: int = SAMPLE_RATE) -> tuple[dict[str, np.ndarray], dict]:
    """The song of `job`: its (frames, 2) int16 stems and mixture, and its metadata."""
    rng = np.random.default_rng(job.seed)
    style = str(rng.choice(job.pool.styles))
    voices = {name: singers.SINGERS[name] for name in job.pool.singers}
    song = compose(rng, job.seconds, style, {name: (voice.low, voice.high) for name, voice in voices.items()})
    soundfont = job.soundfonts[int(rng.integers(len(job.soundfonts)))]
    stems = mix_stems(play(song, soundfont, rng, sample_rate), rng, sample_rate, int(round(job.seconds * sample_rate)))
    for stem in STEMS:  # compose puts every stem in every song; a silent one would be a bug, not a song
        if stem not in stems or not np.any(stems[stem]):
            raise AssertionError(f"{job.folder.name}: the {stem} stem is silent")
    metadata = {
        "pool": job.pool.name,
        "seed": list(job.seed),
        "soundfont": soundfont.name,
        "style": song.style,
        "tempo": song.tempo,
        "meter": song.meter,
        "key": song.key,
        "mode": song.mode,
        "form": song.form,
        "parts": [
            {
                "stem": p.stem,
                "name": p.name,
                "instrument": asdict(p.instrument),
                "notes": len(p.notes),
                "pan": p.pan,
                "level_db": p.level_db,
            }
            for p in song.parts
        ],
    }
    return quantise(stems, rng), metadata


def write_song(folder: Path, audio: dict[str, np.ndarray], metadata: dict, sample_rate: int = SAMPLE_RATE) -> None:
    """`folder/{mixture,drums,bass,other,vocals}.wav` (16-bit) and `song.json`, written into a hidden folder
    beside it that is renamed into place once whole."""
    import soundfile

    partial = folder.with_name(f".{folder.name}{_PARTIAL}{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for source, samples in audio.items():
        soundfile.write(partial / f"{source}.wav", samples, sample_rate, subtype="PCM_16")
    (partial / "song.json").write_text(json.dumps(metadata, indent=1) + "\n")
    os.replace(partial, folder)


def render_job(job: SongJob) -> Path:
    """Render and write one song (a worker's task); returns its folder. Raises CorpusError when a synthesizer
    fails on it (FluidSynth, Festival)."""
    try:
        audio, metadata = make_song(job)
    except RuntimeError as error:
        raise CorpusError(f"{job.folder.name}: {error}") from None
    write_song(job.folder, audio, metadata)
    return job.folder


def render_corpus(
    root: Path,
    split: str,
    songs: int,
    seconds: float,
    seed: int,
    pool: str | Pool = "train",
    soundfonts: tuple[Path, ...] = (),
    prefix: str = "Varied",
    workers: int = 1,
    progress: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Render `songs` songs of `seconds` into `root/<split>/<prefix> - <index>/`, from the `pool` ("train" or
    "held-out", or a `Pool` of one's own) plus any extra `soundfonts`. Songs already there are kept; folders a killed run left half
    written are removed. Returns the folders of all `songs` songs.

    Raises CorpusError for an unknown pool, reserved material, nothing to render with, or a bad length.
    """
    if isinstance(pool, str) and pool not in POOLS:
        raise CorpusError(f"no pool {pool!r}: choose {' or '.join(POOLS)}")
    if seconds < 8.0:
        raise CorpusError(f"songs of {seconds} s are too short for a form: 8 s at least")
    if not fluidsynth.available():
        raise CorpusError("the corpus needs libfluidsynth: apt-get install libfluidsynth3")
    chosen = POOLS[pool] if isinstance(pool, str) else pool
    _check_pool(chosen)
    fonts = tuple(find_soundfonts(chosen, soundfonts))
    folder = Path(root) / split
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".*{_PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)
    jobs = [
        SongJob(folder / f"{prefix} - {index:04d}", (seed, index), seconds, chosen, fonts) for index in range(songs)
    ]
    todo = [job for job in jobs if not job.folder.exists()]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers) as pool_executor:
            for done in pool_executor.map(render_job, todo):
                if progress:
                    progress(done)
    else:
        for job in todo:
            done = render_job(job)
            if progress:
                progress(done)
    return [job.folder for job in jobs]


def _check_pool(pool: Pool) -> None:
    """Raise CorpusError unless every singer and style of `pool` exists, is allowed and can render here: a corpus
    is the same on every machine or is not rendered (a missing voice would change every song's draws)."""
    for name in (*pool.singers, *pool.styles):
        check_allowed(name)
    unknown = [name for name in pool.singers if name not in singers.SINGERS]
    unknown += [name for name in pool.styles if name not in STYLES]
    if unknown:
        raise CorpusError(f"the {pool.name} pool names no such singer or style: {', '.join(unknown)}")
    if not pool.singers or not pool.styles:
        raise CorpusError(f"the {pool.name} pool needs at least one singer and one style")
    missing = [name for name in pool.singers if not singers.available(singers.SINGERS[name])]
    if missing:
        packages = ["festival", *(singers.FESTIVAL_PACKAGES[name] for name in missing)]
        raise CorpusError(f"{', '.join(missing)} cannot sing here: apt-get install {' '.join(packages)}")
