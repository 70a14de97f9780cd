"""Training examples: the paper's shifted chunk grid, a random stereo→mono blend, optional remixing and augmentation.
Each example is a pure function of (seed, position), so resumed and multi-process runs draw the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from .augment import Augmentation, change_speed
from .data import SOURCES, STEMS, CorpusError, Song

_SPEED_MARGIN = 64  # samples read beyond a sped-up chunk, so that the resampled example fills it
ALL = "all"  # phase-1 source meaning "the mixture or any stem, picked per example"
_PERMUTATION_STREAM, _EXAMPLE_STREAM = 0, 1


def to_mono(stereo: np.ndarray, left_weight: float) -> np.ndarray:
    """left_weight·L + (1 − left_weight)·R for (2, T) audio; mono (1, T) audio is returned as is."""
    if stereo.shape[0] == 1:
        return stereo
    return left_weight * stereo[:1] + (1.0 - left_weight) * stereo[1:2]


def expand_sources(sources: Sequence[str], remix: float, augment: Augmentation | None = None) -> set[str]:
    """The files a sampler with these `sources` may read (remixed mixtures, and those of examples whose stems
    change one by one, are summed from the stems)."""
    needed = set(SOURCES) if ALL in sources else set(sources)
    if (remix > 0 or (augment is not None and augment.per_stem)) and "mixture" in needed:
        needed |= set(STEMS)
    return needed


class ChunkSampler:
    """Mono chunks of `sources` (e.g. `("other",)` in phase 1, `("mixture", "other")` in phase 2).

    `shift`: the paper's aug_shift, a uniform offset in [-chunk/2, chunk/2) from the grid point.
    `blend`: the paper's aug_blend, mono = m·L + (1−m)·R with m ~ U(0, 1) per example (else m = ½).
    `remix`: probability that an example takes each stem from an independently drawn song and
    offset; its mixture is then the sum of those stems, so small corpora give more distinct mixtures.
    `augment`: per-stem gain, polarity and EQ, and speed (`augment.Augmentation`); off by default.
    Songs shorter than one chunk are left out.

    An example is a pure function of (seed, position), where the position counts examples over the whole
    run (step · global batch + slot); an epoch is one pass over a seeded permutation of the chunk grid.
    A resumed run, or the ranks of a multi-process run together, therefore draw exactly the examples of
    one uninterrupted single-process run.
    """

    def __init__(
        self,
        songs: Sequence[Song],
        chunk: int,
        sources: Sequence[str],
        seed: int,
        *,
        shift: bool = True,
        blend: bool = True,
        remix: float = 0.0,
        augment: Augmentation | None = None,
    ):
        self.songs = [song for song in songs if song.frames >= chunk]
        if not self.songs:
            raise CorpusError(f"no training song is at least {chunk} samples long")
        self.chunk, self.sources, self.seed = chunk, tuple(sources), seed
        self.shift, self.blend, self.remix = shift, blend, remix
        self.augment = augment or Augmentation()
        # A faster example reads more than a chunk: at most the shortest song (less a margin for the resampler).
        self._fastest = (min(song.frames for song in self.songs) - _SPEED_MARGIN - 1) / chunk
        self.ends = np.cumsum([song.frames for song in self.songs])
        self.items = int(self.ends[-1] // chunk)
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        """Examples per epoch: the number of chunk-grid points."""
        return self.items

    def positions(self, step: int, batch: int, rank: int = 0, world_size: int = 1) -> list[int]:
        """The positions of `rank`'s `batch` examples at `step` (ranks take consecutive slots)."""
        first = (step * world_size + rank) * batch
        return list(range(first, first + batch))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, _PERMUTATION_STREAM, epoch])
            self._order = (epoch, rng.permutation(self.items))
        return self._order[1]

    def locate(self, item: int, rng: np.random.Generator | None = None, frames: int | None = None) -> tuple[Song, int]:
        """Song and start of grid item `item`, shifted when `rng` is given; the `frames` read from there (default:
        a chunk) stay inside the song that holds the chunk's midpoint (as Jukebox's get_index_offset)."""
        offset = item * self.chunk
        if rng is not None:
            offset += int(rng.integers(-self.chunk // 2, self.chunk // 2))
        index = min(int(np.searchsorted(self.ends, offset + self.chunk // 2, side="right")), len(self.songs) - 1)
        song = self.songs[index]
        song_start = int(self.ends[index]) - song.frames
        return song, int(np.clip(offset - song_start, 0, song.frames - (frames or self.chunk)))

    def __getitem__(self, position: int) -> np.ndarray:
        """Example `position`: float32 (len(sources), 1, chunk), one mono chunk per source."""
        rng = np.random.default_rng([self.seed, _EXAMPLE_STREAM, position])
        item = int(self._epoch_order(position // self.items)[position % self.items])
        song, start = self.locate(item, rng if self.shift else None)
        # One blend for every source of the example. The paper's code converted mixture and stem to mono in
        # two calls, each with its own random blend, so its SE target came from another blend than the ME input.
        left_weight = rng.random() if self.blend else 0.5
        remixed = self.remix > 0 and rng.random() < self.remix
        sources = [str(rng.choice(SOURCES)) if source == ALL else source for source in self.sources]
        # Augmentation draws come last, and none when it is off: the examples of earlier runs stay as they were.
        speed = self.augment.draw_speed(rng)
        speed = min(speed, max(1.0, self._fastest)) if speed > 1.0 else speed
        frames = self.chunk if speed == 1.0 else math.ceil(self.chunk * speed) + _SPEED_MARGIN
        from_stems = "mixture" in sources and (remixed or self.augment.per_stem)  # the mixture summed from stems
        names = list(STEMS) if from_stems else sorted(set(sources))
        if remixed:
            stereo = self._remix(rng, names, frames)
        else:
            start = min(start, song.frames - frames)
            stereo = {name: song.read(name, start, frames) for name in names}
        self.augment.change_stems(rng, stereo, song.sample_rate)
        if from_stems:
            mixture = sum(stereo[stem] for stem in STEMS)  # mono stems broadcast against stereo ones
            assert isinstance(mixture, np.ndarray)  # STEMS is never empty, so sum() never returns its start, 0
            stereo["mixture"] = mixture
        if speed != 1.0:
            stereo = {name: change_speed(audio, speed, self.chunk) for name, audio in stereo.items()}
        return np.stack([to_mono(stereo[source], left_weight) for source in sources]).astype(np.float32)

    def _remix(self, rng: np.random.Generator, names: list[str], frames: int) -> dict[str, np.ndarray]:
        """`frames` of each of `names` (sources, never the mixture) from an independently drawn song and start."""
        stereo: dict[str, np.ndarray] = {}
        for name in names:
            song, start = self.locate(int(rng.integers(self.items)), rng if self.shift else None, frames)
            stereo[name] = song.read(name, start, frames)
        return stereo

    def stats_chunks(self, count: int) -> Iterator[np.ndarray]:
        """`count` evenly spaced, unshifted stereo chunks of the input source (the first of `sources`;
        for `all`, the sources in turn), for measuring normalisation statistics deterministically."""
        for n, item in enumerate(np.linspace(0, self.items - 1, min(count, self.items)).round().astype(int)):
            song, start = self.locate(int(item))
            source = SOURCES[n % len(SOURCES)] if self.sources[0] == ALL else self.sources[0]
            yield song.read(source, start, self.chunk)


class StepBatches:
    """Batches of positions for steps [start, stop) of one rank: a DataLoader `batch_sampler`."""

    def __init__(self, sampler: ChunkSampler, start: int, stop: int, batch: int, rank: int = 0, world_size: int = 1):
        self.sampler, self.start, self.stop = sampler, start, stop
        self.batch, self.rank, self.world_size = batch, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.sampler.positions(step, self.batch, self.rank, self.world_size)


def validation_starts(song: Song, chunk: int, count: int) -> list[int]:
    """Starts of `count` evenly spaced chunks covering the song (fewer if it is short)."""
    last = song.frames - chunk
    if last < 0:
        return []
    return sorted(set(np.linspace(0, last, count).round().astype(int).tolist()))
