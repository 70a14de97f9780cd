"""Soft-mask refinement: the model's stem estimates, turned into ratio masks over the mixture's spectrogram.

The paper's output is each decoder's waveform as it is. Each decoder rebuilds its stem from one of 2048 codes
per 8 samples, and the mixture encoder picks some codes wrongly, so every estimate carries noise that is not in
the mixture at all. Refinement keeps the estimates' judgement of *which stem owns which time-frequency bin*
and takes the sound itself from the mixture: stem j becomes the inverse STFT of M_j ⊙ X, with
M_j = |Ŝ_j|² / Σ_k |Ŝ_k|²: the ratio mask Spleeter applies to its estimates, open-unmix's Wiener filter without
its EM iterations (which need the whole track's statistics, and so would not stream). The refined stems sum to
the mixture, and the masks never add anything the mixture lacks.

It runs in a stream, frame by frame, on a fixed grid: frame f covers samples [f·hop − (window − hop), f·hop +
hop), so a chunked run computes exactly the frames of a whole-signal run and the results are identical.
A bin where every estimate is silent is split equally (each stem gets X / stems).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .manifest import STEMS

WINDOW = 4096  # samples per STFT frame: 93 ms at 44.1 kHz; the same as the bench's IRM oracle
POWER = 2.0  # |Ŝ|^POWER, the power (Wiener) mask: on validation songs 1 scored 0.1 dB less, 3 and 4 0.2–0.4 dB
FRAMES_PER_BLOCK = 64  # frames transformed together: bounds the working memory (~10 MB per channel)
_TINY = 1e-30  # keeps a bin where all estimates are silent at an equal split instead of 0 / 0


def covers_the_mixture(stems: Iterable[str]) -> bool:
    """Whether `stems` are the four the mixture is the sum of, as the masks need to split it between them."""
    return set(stems) == set(STEMS)


def _hann(length: int) -> np.ndarray:
    """The periodic Hann window: its squares at hop length/4 sum to exactly 3/2 at every sample."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)


class MaskRefiner:
    """Refines stem estimates against the mixture as both arrive; output lags the estimates by < one window.

    `add_mixture` takes the mixture (it runs ahead of the estimates); `refine` takes each stem's next final
    samples (equal lengths, every stem) and returns the refined samples that no later frame can change;
    `refine(..., final=True)` ends the signal and returns the rest.
    """

    def __init__(self, stems: tuple[str, ...], channels: int, window: int = WINDOW, power: float = POWER):
        if window <= 0 or window % 4:
            raise ValueError(f"the STFT window must be a positive multiple of 4 samples, got {window}")
        self.stems = tuple(stems)
        self.window, self.hop, self.power = window, window // 4, power
        self._taper = _hann(window)
        lead = window - self.hop
        # Buffers start at the next frame's first sample (`_origin`, absolute; the first frame starts `lead`
        # samples before the signal, in zeros). `_sums` holds the overlap-add of the frames done so far.
        self._origin = -lead
        self._mixture = np.zeros((lead, channels), np.float32)
        self._estimates = {stem: np.zeros((lead, channels), np.float32) for stem in self.stems}
        self._sums = {stem: np.zeros((lead, channels), np.float32) for stem in self.stems}
        self._length = 0  # estimate samples received
        self._emitted = 0  # refined samples returned

    def add_mixture(self, block: np.ndarray) -> None:
        """Append (frames, channels) of the mixture."""
        self._mixture = np.concatenate([self._mixture, np.asarray(block, np.float32)])

    def refine(self, estimates: Mapping[str, np.ndarray], final: bool = False) -> dict[str, np.ndarray]:
        """Append each stem's next (frames, channels) samples; return the refined samples now final."""
        lengths = {len(estimates[stem]) for stem in self.stems}
        if len(lengths) != 1:
            raise ValueError(f"the stems' estimates differ in length: {sorted(lengths)}")
        for stem in self.stems:
            self._estimates[stem] = np.concatenate([self._estimates[stem], np.asarray(estimates[stem], np.float32)])
        self._length += lengths.pop()
        if self._origin + len(self._mixture) < self._length:
            raise ValueError("the estimates are ahead of the mixture they refine")
        known = self._length - self._origin  # buffered samples of the signal
        if final:  # every frame that starts inside the signal, over the same zeros a one-shot run sees
            frames = -(-known // self.hop) if known > 0 else 0
            rows = max(known, (frames - 1) * self.hop + self.window)
            self._mixture = _pad_rows(self._mixture[:known], rows)
            for stem in self.stems:
                self._estimates[stem] = _pad_rows(self._estimates[stem], rows)
        else:  # every frame whose samples have all arrived
            frames = (known - self.window) // self.hop + 1 if known >= self.window else 0
        if frames:  # room in the sums for every frame about to be added, made once
            rows = (frames - 1) * self.hop + self.window
            self._sums = {stem: _pad_rows(sums, max(rows, len(sums))) for stem, sums in self._sums.items()}
        for first in range(0, frames, FRAMES_PER_BLOCK):
            self._overlap_add(first, min(frames, first + FRAMES_PER_BLOCK))
        done = self._length if final else max(0, self._origin + frames * self.hop)
        out = {
            stem: sums[self._emitted - self._origin : done - self._origin] / np.float32(1.5)  # Σ of squared windows
            for stem, sums in self._sums.items()
        }
        self._emitted = done
        self._advance(frames * self.hop)
        return out

    def _overlap_add(self, first: int, stop: int) -> None:
        """Transform frames [first, stop) (counted from the buffers' origin) and add them into the sums."""
        begin, end = first * self.hop, (stop - 1) * self.hop + self.window

        def spectra(signal: np.ndarray) -> np.ndarray:  # (frames, channels, bins)
            framed = np.lib.stride_tricks.sliding_window_view(signal[begin:end], self.window, axis=0)[:: self.hop]
            return np.fft.rfft(framed * self._taper, axis=-1)

        mixture = spectra(self._mixture)
        powers = {stem: np.abs(spectra(self._estimates[stem])) ** self.power for stem in self.stems}
        total = sum(powers.values()) + len(self.stems) * _TINY
        for stem in self.stems:
            frames = np.fft.irfft((powers[stem] + _TINY) / total * mixture, n=self.window, axis=-1) * self._taper
            sums = self._sums[stem]
            for index, frame in enumerate(frames.astype(np.float32)):
                start = begin + index * self.hop
                sums[start : start + self.window] += frame.T

    def _advance(self, shift: int) -> None:
        """Move the origin `shift` samples on, dropping what no later frame reads or adds to."""
        if not shift:
            return
        self._origin += shift
        self._mixture = self._mixture[shift:].copy()  # copies, so the dropped heads are freed
        for stem in self.stems:
            self._estimates[stem] = self._estimates[stem][shift:].copy()
            self._sums[stem] = self._sums[stem][shift:].copy()


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` cut or zero-padded to `rows` rows."""
    if len(array) >= rows:
        return array[:rows]
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def refine(mixture: np.ndarray, estimates: Mapping[str, np.ndarray], window: int = WINDOW) -> dict[str, np.ndarray]:
    """Refine whole (frames, channels) estimates against their mixture in one pass (what a stream gives)."""
    refiner = MaskRefiner(tuple(estimates), mixture.shape[1], window)
    refiner.add_mixture(mixture)
    return refiner.refine(estimates, final=True)
