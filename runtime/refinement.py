"""Refinement: the model's stem estimates turned into filters over the mixture's spectrogram.

The paper's output is each decoder's waveform as it is. Each decoder rebuilds its stem from one of 2048 codes
per 8 samples, and the mixture encoder picks some codes wrongly, so every estimate carries noise that is not in
the mixture at all. Refinement keeps the estimates' judgement of *which stem owns which part of the mixture*
and takes the sound itself from the mixture, in two steps on one STFT (X the mixture's, Ŝ_j the estimates'):

1. Drums: the power ratio mask D = |Ŝ_drums|² / Σ_k |Ŝ_k|² ⊙ X, per channel (the single-step Wiener filter
   Spleeter and open-unmix end with).
2. The rest, X − D, is split between bass, other and vocals by a multichannel Wiener filter (Duong, Vincent &
   Gribonval 2010; open-unmix's norbert without its EM iterations): stem j is modelled as v_j(t, f) R_j(f), with
   v_j its estimate's power (mean over channels) and R_j its spatial covariance (where in the stereo field it
   sits, per frequency), and gets v_j R_j (Σ_k v_k R_k)⁻¹ (X − D). Where the power masks see two stems in one
   bin, the stereo image still tells them apart.

Why drums are masked first: measured on validation songs, the spatial filter cost drums 0.4 dB while it gained
the others 0.1–0.5 dB (a kit's pieces sit in different places and sound in turn, which one covariance per
frequency describes badly). Why the long window: the tonal stems gain from the frequency resolution (0.37 s
frames, 2.7 Hz bins; 4096 samples scored 0.1 dB less on other, bass and vocals), and drums, masked on the same
grid, lose under 0.05 dB.

Both steps split what they are given exactly, so the refined stems sum to the mixture, and nothing is added that
the mixture lacks. They run in a stream on fixed grids: frame f covers samples [f·hop − (window − hop),
f·hop + hop), and the covariances R_j are running averages updated block by block (BLOCK_FRAMES frames from the
signal's start, each block filtered with the statistics of every block up to and including it), so a chunked run
computes exactly what a whole-signal run does. A bin where every estimate is silent is split equally.
Mono and stereo are filtered as described; with more channels each is refined on its own, as mono. A bundle may
carry `BandWeights`, gains on each stem's power per frequency band, and a spread per stem, a number of neighbouring
bins its power is averaged over (`spread_power`); both steps then use those powers in place of the plain ones.

R_j is measured on stem j's estimate. Estimates without a stereo image of their own (one mono estimate, of the
mixture's mid channel, on both channels) make every R_j alike and step 2 a power mask; `spatial="mixture"` measures
R_j on the mixture instead, masked by the stem's share of the powers, Y_j = w_j / Σ_k w_k ⊙ X per channel (w the
weighted, spread powers both steps use), as norbert starts its EM when it has only magnitudes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .manifest import STEMS

WINDOW = 16384  # samples per STFT frame (0.37 s at 44.1 kHz)
BLOCK_FRAMES = 16  # frames per covariance update: 65536 samples at the default window; bounds working memory
MASKED_FIRST = "drums"  # the stem taken out by its power mask before the spatial filter splits the rest
SPATIAL = ("estimates", "mixture")  # what the filtered stems' spatial covariances may be measured on (`Refiner`)
_TINY = 1e-30  # keeps a bin where all estimates are silent at an equal split instead of 0 / 0
_LOADING = 1e-3  # added to each covariance's diagonal (its trace is the channel count): keeps Σ v_k R_k
# invertible when every stem sits on one line of the stereo field, e.g. a mono recording stored as stereo


def covers_the_mixture(stems: Iterable[str]) -> bool:
    """Whether `stems` are the four the mixture is the sum of, as refinement needs to split it between them."""
    return set(stems) == set(STEMS)


@dataclass(frozen=True)
class BandWeights:
    """Gains on each stem's estimated power, constant over frequency bands; a bundle's manifest may carry them.

    Each decoder's errors have a spectral shape of its own: the default bundle's bass and vocals decoders, for
    one, leave a noise floor above 7 kHz where only drums and other sound, and plain powers hand the filters
    that noise's share of the mixture. A gain per stem and band (fitted on training songs by `unmix-export
    --refinement-data`, `unmix.export.refinement_fit`) says how far each stem's power is to be trusted there.
    Only ratios between stems matter, so one stem may stay at 0 dB.
    """

    edges_hz: tuple[float, ...]  # band b holds the bins with edges_hz[b] ≤ frequency < edges_hz[b + 1]
    gains_db: Mapping[str, tuple[float, ...]]  # stem → one gain per band; a stem not listed keeps 0 dB

    def __post_init__(self):
        edges = np.asarray(self.edges_hz, float)
        if len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ValueError("band edges must be two or more finite frequencies in increasing order")
        for stem, gains in self.gains_db.items():
            if stem not in STEMS:
                raise ValueError(f"band weights for an unknown stem {stem!r}")
            if len(gains) != len(edges) - 1 or not np.all(np.isfinite(gains)):
                raise ValueError(f"{stem}: {len(gains)} gains for {len(edges) - 1} bands")

    @classmethod
    def from_dict(cls, data: Mapping) -> "BandWeights":
        """Read the manifest's form, {"edges_hz": [...], "gains_db": {stem: [...]}}."""
        try:
            return cls(tuple(map(float, data["edges_hz"])),
                       {stem: tuple(map(float, gains)) for stem, gains in data["gains_db"].items()})
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"band weights need edges_hz and gains_db per stem ({error})") from None

    def to_dict(self) -> dict:
        return {"edges_hz": list(self.edges_hz), "gains_db": {stem: list(g) for stem, g in self.gains_db.items()}}

    def per_bin(self, window: int, sample_rate: int) -> dict[str, np.ndarray]:
        """Each listed stem's linear power gain at every bin of a `window`-sample STFT (bins outside the edges
        take the nearest band's)."""
        frequencies = np.arange(window // 2 + 1) * sample_rate / window
        band = np.clip(np.searchsorted(self.edges_hz, frequencies, side="right") - 1, 0, len(self.edges_hz) - 2)
        return {stem: 10 ** (np.asarray(gains)[band] / 10) for stem, gains in self.gains_db.items()}


def hann(length: int) -> np.ndarray:
    """The periodic Hann window: its squares at hop length/4 sum to exactly 3/2 at every sample."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)


class Refiner:
    """Refines stem estimates against the mixture as both arrive, in blocks of BLOCK_FRAMES frames.

    `add_mixture` takes the mixture (it runs ahead of the estimates); `refine` takes each stem's next final
    samples (equal lengths, every stem) and returns the refined samples that no later block can change;
    `refine(..., final=True)` ends the signal and returns the rest. Output lags the estimates by less than
    one block plus one window.
    """

    def __init__(self, stems: tuple[str, ...], channels: int, window: int = WINDOW, block_frames: int = BLOCK_FRAMES,
                 weights: Mapping[str, np.ndarray] | None = None, spread: Mapping[str, int] | None = None, *,
                 spatial: str = "estimates"):
        """`weights`: a power gain per bin (window // 2 + 1 of them) for any stem (default 1; `BandWeights.per_bin`);
        `spread`: an odd number of bins to average any stem's power over (default 1: none; `spread_power`);
        `spatial`: what each filtered stem's spatial covariance is measured on: "estimates", its estimate, or
        "mixture", the mixture masked by the stem's share of the powers (for estimates without a stereo image of
        their own, such as one mono estimate on both channels; norbert starts its EM from the same)."""
        if not covers_the_mixture(stems):
            raise ValueError(f"refinement splits the mixture between all of {', '.join(STEMS)}, got {stems}")
        if window <= 0 or window % 4:
            raise ValueError(f"the STFT window must be a positive multiple of 4 samples, got {window}")
        if block_frames <= 0:
            raise ValueError(f"a covariance block needs at least one frame, got {block_frames}")
        self.spatial = check_spatial(spatial)
        self._spread = [check_spread(stem, (spread or {}).get(stem, 1)) for stem in stems]
        self.stems = tuple(stems)
        self.window, self.hop, self.block_frames = window, window // 4, block_frames
        self._masked = self.stems.index(MASKED_FIRST)
        self._filtered = [index for index in range(len(self.stems)) if index != self._masked]
        self._taper = hann(window)
        bins = window // 2 + 1
        # None without weights: the hot path then skips multiplying every power by ones
        self._weights = [np.broadcast_to(np.asarray(weights.get(stem, 1.0), float), (bins,))
                         for stem in self.stems] if weights else None
        # Channels filtered together: mono or stereo as one group; more (surround) one by one, as mono signals,
        # since a covariance per bin over many channels costs their square in memory and says little more.
        size = channels if channels <= 2 else 1
        self._groups = [slice(first, first + size) for first in range(0, channels, size)]
        # Running sums over every frame filtered so far, per group, filtered stem and bin: Σ S Sᴴ and Σ v, S the
        # spectrum the covariances are measured on (`spatial`).
        self._outer = [np.zeros((len(self._filtered), bins, size, size), np.complex128) for _ in self._groups]
        self._power = [np.zeros((len(self._filtered), bins), np.float64) for _ in self._groups]
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
        else:  # every whole block whose samples have all arrived (the origin stays on the block grid)
            frames = (known - self.window) // self.hop + 1 if known >= self.window else 0
            frames -= frames % self.block_frames
        if frames:  # room in the sums for every frame about to be added, made once
            rows = (frames - 1) * self.hop + self.window
            self._sums = {stem: _pad_rows(sums, max(rows, len(sums))) for stem, sums in self._sums.items()}
        for first in range(0, frames, self.block_frames):
            self._filter_block(first, min(frames, first + self.block_frames))
        done = self._length if final else max(0, self._origin + frames * self.hop)
        out = {
            stem: sums[self._emitted - self._origin : done - self._origin] / np.float32(1.5)  # Σ of squared windows
            for stem, sums in self._sums.items()
        }
        self._emitted = done
        self._advance(frames * self.hop)
        return out

    def _filter_block(self, first: int, stop: int) -> None:
        """Filter frames [first, stop) (counted from the buffers' origin) and add them into the sums."""
        begin, end = first * self.hop, (stop - 1) * self.hop + self.window
        for group, channels in enumerate(self._groups):
            mixture = spectra(self._mixture[begin:end, channels], self._taper)
            estimates = [spectra(self._estimates[stem][begin:end, channels], self._taper) for stem in self.stems]
            outputs = self._filter(group, mixture, estimates)
            for stem, spectrum in outputs.items():
                frames = np.fft.irfft(spectrum.transpose(0, 2, 1), n=self.window, axis=-1) * self._taper
                sums = self._sums[stem]
                for index, frame in enumerate(frames.astype(np.float32)):
                    start = begin + index * self.hop
                    sums[start : start + self.window, channels] += frame.T

    def _filter(self, group: int, mixture: np.ndarray, estimates: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One group's refined spectra, (frames, bins, channels) per stem; updates its running covariances."""
        powers = [np.abs(estimate) ** 2 + _TINY for estimate in estimates]
        # The weights and spreads shape the powers the filters share the mixture by; the spatial covariances are
        # normalised by the plain powers, since a stem's place in the stereo field does not depend on how loud it is.
        weighted = [spread_power(p, bins) for p, bins in zip(powers, self._spread)]
        if self._weights is not None:
            weighted = [p * w[:, None] for p, w in zip(weighted, self._weights)]
        covariances = []
        for slot, index in enumerate(self._filtered):
            if self.spatial == "mixture":  # Y_j = X · w_j / Σ_k w_k per channel
                spatial = weighted[index] / sum(weighted) * mixture
                power = np.abs(spatial) ** 2 + _TINY
            else:
                spatial, power = estimates[index], powers[index]
            self._outer[group][slot] += (spatial[..., :, None] * spatial[..., None, :].conj()).sum(axis=0)
            self._power[group][slot] += power.mean(axis=-1).sum(axis=0)
            covariances.append(spatial_covariance(self._outer[group][slot], self._power[group][slot]))
        return dict(zip(self.stems, split(mixture, weighted, covariances, self._masked)))

    def _advance(self, shift: int) -> None:
        """Move the origin `shift` samples on, dropping what no later frame reads or adds to."""
        if not shift:
            return
        self._origin += shift
        self._mixture = self._mixture[shift:].copy()  # copies, so the dropped heads are freed
        for stem in self.stems:
            self._estimates[stem] = self._estimates[stem][shift:].copy()
            self._sums[stem] = self._sums[stem][shift:].copy()


def check_spread(stem: str, bins) -> int:
    """`bins` as a power spread for `stem`: a positive odd integer, or ValueError."""
    if stem not in STEMS:
        raise ValueError(f"a power spread for an unknown stem {stem!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1 or bins % 2 == 0:
        raise ValueError(f"{stem}: a power spread is an odd number of bins, got {bins!r}")
    return int(bins)


def check_spatial(spatial) -> str:
    """`spatial` as what the spatial covariances are measured on (one of `SPATIAL`), or ValueError."""
    if not isinstance(spatial, str) or spatial not in SPATIAL:
        raise ValueError(f"spatial covariances are measured on {' or '.join(map(repr, SPATIAL))}, got {spatial!r}")
    return spatial


def spread_power(power: np.ndarray, bins: int) -> np.ndarray:
    """`power` (frames, bins, channels) averaged over each bin and its `bins` // 2 neighbours on either side (the
    edge bins repeated past the ends).

    Why: at 2.7 Hz per bin, an estimate whose energy lands a bin or two off the mixture's (a partial slightly
    mistuned, a smeared onset) leaves the true bins to whichever stem claims them; a spread power claims its
    neighbours too. Measured on the default bundle's validation songs, spreading other's power over 3 bins (with
    band weights refitted for it) gained other 0.04 dB and the mean 0.025 dB, most of it below 300 Hz, where other
    and bass share the bins; over 5 bins other gained less and drums lost.
    """
    if bins == 1:
        return power
    half = bins // 2
    padded = np.pad(power, ((0, 0), (half, half), (0, 0)), mode="edge")
    return sum(padded[:, offset : offset + power.shape[1]] for offset in range(bins)) / bins


def spectra(signal: np.ndarray, taper: np.ndarray) -> np.ndarray:
    """The STFT of (samples, channels) on the refinement's frame grid (hop len(taper) / 4): (frames, bins, channels)."""
    window = len(taper)
    framed = np.lib.stride_tricks.sliding_window_view(signal, window, axis=0)[:: window // 4]
    spectrum = np.fft.rfft(framed * taper, axis=-1).transpose(0, 2, 1)
    return spectrum.astype(np.complex128)  # a silent bin's determinant (~1e-66) underflows complex64


def spatial_covariance(outer: np.ndarray, power: np.ndarray) -> np.ndarray:
    """R (bins, ch, ch) from Σ Ŝ Ŝᴴ (bins, ch, ch) and Σ v (bins) over the same frames, diagonally loaded."""
    return outer / power[:, None, None] + _LOADING * np.eye(outer.shape[-1])


def split(
    mixture: np.ndarray, powers: list[np.ndarray], covariances: list[np.ndarray], masked: int
) -> list[np.ndarray]:
    """Both steps on one block of bins: each stem's spectrum (frames, bins, channels), in the order of `powers`.

    mixture: X (frames, bins, channels); powers: each stem's (weighted) power, X's shape; covariances: R_j of
    every stem but the `masked` one, in order. Looping over the stems, rather than broadcasting across them,
    keeps the temporaries at one stem's size.
    """
    taken = powers[masked] / sum(powers) * mixture
    rest = mixture - taken
    filtered = [index for index in range(len(powers)) if index != masked]
    variances = [powers[index].mean(axis=-1) for index in filtered]  # v_j (frames, bins)
    # Σ_j v_j R_j z = X − D, then stem j = v_j R_j z: the stems add up to X − D.
    shared = _solve(sum(v[..., None, None] * r for v, r in zip(variances, covariances, strict=True)), rest)
    outputs = [taken] * len(powers)
    for index, v, r in zip(filtered, variances, covariances):
        outputs[index] = v[..., None] * (r * shared[..., None, :]).sum(axis=-1)
    return outputs


def _solve(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """x with matrices @ x = vectors, for stacks of 1×1 or 2×2 matrices, in closed form (numpy's batched
    solve calls LAPACK once per matrix, which took longer than the rest of the refinement)."""
    if matrices.shape[-1] == 1:
        return vectors / matrices[..., 0]
    a, b, c, d = matrices[..., 0, 0], matrices[..., 0, 1], matrices[..., 1, 0], matrices[..., 1, 1]
    first, second = vectors[..., 0], vectors[..., 1]
    determinant = a * d - b * c
    return np.stack([d * first - b * second, a * second - c * first], axis=-1) / determinant[..., None]


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` cut or zero-padded to `rows` rows."""
    if len(array) >= rows:
        return array[:rows]
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def refine(
    mixture: np.ndarray, estimates: Mapping[str, np.ndarray], window: int = WINDOW, block_frames: int = BLOCK_FRAMES,
    weights: Mapping[str, np.ndarray] | None = None, spread: Mapping[str, int] | None = None, *,
    spatial: str = "estimates",
) -> dict[str, np.ndarray]:
    """Refine whole (frames, channels) estimates against their mixture in one pass (what a stream gives)."""
    refiner = Refiner(tuple(estimates), mixture.shape[1], window, block_frames, weights, spread, spatial=spatial)
    refiner.add_mixture(mixture)
    return refiner.refine(estimates, final=True)
