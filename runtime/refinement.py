"""Refinement: the model's stem estimates turned into filters over the mixture's spectrogram.

Drums take their power-ratio share of the mixture, and a multichannel Wiener filter splits the rest between bass,
other and vocals; both steps split exactly, so the stems sum to the mixture, and a chunked run computes what a
whole-signal run does.
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
    one, leave a noise floor in the high bands where only drums and other sound, and plain powers hand the filters
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
    def from_dict(cls, data: Mapping) -> BandWeights:
        """Read the manifest's form, {"edges_hz": [...], "gains_db": {stem: [...]}}."""
        try:
            return cls(
                tuple(map(float, data["edges_hz"])),
                {stem: tuple(map(float, gains)) for stem, gains in data["gains_db"].items()},
            )
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

    On one STFT (X the mixture's, Ŝ_j the estimates'), drums get the power ratio mask |Ŝ_drums|² / Σ_k |Ŝ_k|² ⊙ X
    per channel, and the rest, X − drums, is split between bass, other and vocals by a multichannel Wiener filter
    (Duong, Vincent & Gribonval 2010; norbert without its EM iterations): stem j, modelled as v_j(t, f) R_j(f) (its
    estimate's power, mean over channels, and its spatial covariance per frequency), gets v_j R_j (Σ_k v_k R_k)⁻¹
    (X − drums). Everything runs on fixed grids (frame f covers samples [f·hop − (window − hop), f·hop + hop); the
    covariances are running averages updated every `block_frames` frames), so a chunked run computes what a
    whole-signal run does. The arithmetic is single precision, arranged so that the spatial filter loses nothing to
    it (`_spatial_filter`). The README's Refinement section has the measurements behind these choices.
    """

    def __init__(
        self,
        stems: tuple[str, ...],
        channels: int,
        window: int = WINDOW,
        block_frames: int = BLOCK_FRAMES,
        weights: Mapping[str, np.ndarray] | None = None,
        spread: Mapping[str, int] | None = None,
        *,
        spatial: str = "estimates",
    ):
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
        self._synthesis = self._taper / np.float32(1.5)  # the squared windows sum to 1.5 at every sample
        bins = window // 2 + 1
        # A spread power is taken as a sum over its bins times weight / bins, one product; None where that factor is
        # one, so the hot path skips multiplying every power by ones.
        self._gains = [
            None
            if not weights and width == 1
            else np.broadcast_to(np.asarray((weights or {}).get(stem, 1.0), float) / width, (bins,)).astype(np.float32)
            for stem, width in zip(self.stems, self._spread, strict=False)
        ]
        # Channels filtered together: mono or stereo as one group; more (surround) one by one, as mono signals,
        # since a covariance per bin over many channels costs their square in memory and says little more.
        size = channels if channels <= 2 else 1
        self._groups = [slice(first, first + size) for first in range(0, channels, size)]
        # Running sums over every frame filtered so far, per group, filtered stem and bin, for the spatial covariances:
        # Σ |S_c|² per channel, Σ S₀ S̄₁ (stereo), and Σ v = Σ mean_c |S_c|² (+ _TINY a frame), S the spectrum they
        # are measured on (`spatial`).
        filtered = len(self._filtered)
        self._diagonal = [np.zeros((filtered, size, bins)) for _ in self._groups]
        self._cross = [np.zeros((filtered, bins), np.complex128) for _ in self._groups]
        self._power = [np.zeros((filtered, bins)) for _ in self._groups]
        lead = window - self.hop
        # Buffers, (channels, samples), start at the next frame's first sample (`_origin`, absolute; the first frame
        # starts `lead` samples before the signal, in zeros). `_sums` holds the overlap-add of the frames done so far,
        # for the filtered stems: the masked one is the mixture less those (see `refine`).
        self._origin = -lead
        self._mixture = np.zeros((channels, lead), np.float32)
        self._estimates = {stem: np.zeros((channels, lead), np.float32) for stem in self.stems}
        self._sums = {self.stems[index]: np.zeros((channels, lead), np.float32) for index in self._filtered}
        self._length = 0  # estimate samples received
        self._emitted = 0  # refined samples returned

    def add_mixture(self, block: np.ndarray) -> None:
        """Append (frames, channels) of the mixture."""
        self._mixture = np.concatenate([self._mixture, np.asarray(block, np.float32).T], axis=1)

    def refine(self, estimates: Mapping[str, np.ndarray], final: bool = False) -> dict[str, np.ndarray]:
        """Append each stem's next (frames, channels) samples; return the refined samples now final."""
        lengths = {len(estimates[stem]) for stem in self.stems}
        if len(lengths) != 1:
            raise ValueError(f"the stems' estimates differ in length: {sorted(lengths)}")
        for stem in self.stems:
            self._estimates[stem] = np.concatenate(
                [self._estimates[stem], np.asarray(estimates[stem], np.float32).T], axis=1
            )
        self._length += lengths.pop()
        if self._origin + self._mixture.shape[1] < self._length:
            raise ValueError("the estimates are ahead of the mixture they refine")
        known = self._length - self._origin  # buffered samples of the signal
        if final:  # every frame that starts inside the signal, over the same zeros a one-shot run sees
            frames = -(-known // self.hop) if known > 0 else 0
            samples = max(known, (frames - 1) * self.hop + self.window)
            self._mixture = _pad_samples(self._mixture[:, :known], samples)
            for stem in self.stems:
                self._estimates[stem] = _pad_samples(self._estimates[stem], samples)
        else:  # every whole block whose samples have all arrived (the origin stays on the block grid)
            frames = (known - self.window) // self.hop + 1 if known >= self.window else 0
            frames -= frames % self.block_frames
        if frames:  # room in the sums for every frame about to be added, made once
            samples = (frames - 1) * self.hop + self.window
            self._sums = {stem: _pad_samples(sums, max(samples, sums.shape[1])) for stem, sums in self._sums.items()}
        for first in range(0, frames, self.block_frames):
            self._filter_block(first, min(frames, first + self.block_frames))
        done = self._length if final else max(0, self._origin + frames * self.hop)
        span = slice(self._emitted - self._origin, done - self._origin)
        out = {stem: sums[:, span] for stem, sums in self._sums.items()}
        # Every sample is in four frames whose squared windows sum to 1.5 and the filters split each frame's
        # spectrum exactly, so the masked stem is the mixture less the others: one inverse STFT fewer.
        out[self.stems[self._masked]] = self._mixture[:, span] - _sum(list(out.values()))
        self._emitted = done
        self._advance(frames * self.hop)
        return {stem: np.ascontiguousarray(out[stem].T) for stem in self.stems}

    def _filter_block(self, first: int, stop: int) -> None:
        """Filter frames [first, stop) (counted from the buffers' origin) and add them into the sums."""
        begin, end = first * self.hop, (stop - 1) * self.hop + self.window
        for group, channels in enumerate(self._groups):
            mixture = _stft(self._mixture[channels, begin:end], self._taper)
            estimates = [_stft(self._estimates[stem][channels, begin:end], self._taper) for stem in self.stems]
            for index, spectrum in zip(self._filtered, self._filter(group, mixture, estimates), strict=False):
                frames = np.fft.irfft(spectrum, n=self.window, axis=-1)
                _overlap_add(frames, self._synthesis, self._sums[self.stems[index]][channels, begin:end])

    def _filter(self, group: int, mixture: np.ndarray, estimates: list[np.ndarray]) -> list[np.ndarray]:
        """One group's refined spectra of the filtered stems, (channels, frames, bins) each; updates its running
        covariances."""
        powers = [_squared_magnitude(estimate) for estimate in estimates]
        if self.spatial == "estimates":
            for slot, index in enumerate(self._filtered):
                self._accumulate(group, slot, powers[index], _cross(estimates[index]))
        # The weights and spreads shape the powers the filters share the mixture by (in place: the plain powers are
        # done with); the spatial covariances are normalised by the plain powers, since a stem's place in the stereo
        # field does not depend on how loud it is.
        weighted = [
            _weigh(power, bins, gain) for power, bins, gain in zip(powers, self._spread, self._gains, strict=False)
        ]
        if self.spatial == "mixture":  # Y_j = X · w_j / Σ_k w_k per channel
            total, power, cross = _sum(weighted), _squared_magnitude(mixture), _cross(mixture)
            for slot, index in enumerate(self._filtered):
                mask = weighted[index] / total
                self._accumulate(
                    group, slot, power * np.square(mask), None if cross is None else cross * (mask[0] * mask[1])
                )
        return _spatial_filter(
            _rest(mixture, weighted, self._masked),
            _variances([weighted[index] for index in self._filtered]),
            _covariance_entries(self._diagonal[group], self._cross[group], self._power[group]),
        )

    def _accumulate(self, group: int, slot: int, power: np.ndarray, cross: np.ndarray | None) -> None:
        """Add one block of a filtered stem's spatial statistics to its running sums: |S|² (channels, frames, bins)
        and, for stereo, S₀ S̄₁ (frames, bins), S the spectrum they are measured on."""
        sums = power.sum(axis=1)  # (channels, bins)
        self._diagonal[group][slot] += sums
        if cross is not None:
            self._cross[group][slot] += cross.sum(axis=0)
        self._power[group][slot] += sums.mean(axis=0, dtype=np.float64) + power.shape[1] * _TINY

    def _advance(self, shift: int) -> None:
        """Move the origin `shift` samples on, dropping what no later frame reads or adds to."""
        if not shift:
            return
        self._origin += shift
        self._mixture = self._mixture[:, shift:].copy()  # copies, so the dropped heads are freed
        for stem in self.stems:
            self._estimates[stem] = self._estimates[stem][:, shift:].copy()
        for stem, sums in self._sums.items():
            self._sums[stem] = sums[:, shift:].copy()


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
    neighbours too (the README's Refinement section has what it gained, and where).
    """
    if bins == 1:
        return power
    return np.moveaxis(_spread_sum(np.moveaxis(power, 1, -1), bins), -1, 1) / bins


def _spread_sum(power: np.ndarray, bins: int) -> np.ndarray:
    """`power` (..., bins) summed over each bin and its `bins` // 2 neighbours on either side, the edge bins repeated
    past the ends: a new array (`power` itself for one bin)."""
    if bins == 1:
        return power
    total = power.copy()
    for offset in range(1, bins // 2 + 1):
        total[..., offset:] += power[..., :-offset]  # the neighbour below
        total[..., :-offset] += power[..., offset:]  # and above
        total[..., :offset] += power[..., :1]  # past the ends, the edge bins
        total[..., -offset:] += power[..., -1:]
    return total


def spectra(signal: np.ndarray, taper: np.ndarray) -> np.ndarray:
    """The STFT of (samples, channels) on the refinement's frame grid (hop len(taper) / 4): (frames, bins, channels),
    complex128 for callers that analyse it further."""
    return _stft(np.asarray(signal).T, taper).transpose(1, 2, 0).astype(np.complex128)


def _stft(signal: np.ndarray, taper: np.ndarray) -> np.ndarray:
    """The STFT of (channels, samples) on the refinement's frame grid: (channels, frames, bins), complex64."""
    window = len(taper)
    frames = np.lib.stride_tricks.sliding_window_view(signal, window, axis=-1)[:, :: window // 4]
    # With its default normalisation numpy (2.x) passes rfft an integer scale, which picks the double-precision loop
    # (the frames cast up, the spectrum cast back down); "forward" passes a float32 scale, 1 / window, which the
    # taper scaled by the window undoes (exactly, for a power of two).
    spectrum = np.fft.rfft(frames * (taper * np.float32(window)), axis=-1, norm="forward")
    return spectrum.astype(np.complex64, copy=False)


def _overlap_add(frames: np.ndarray, taper: np.ndarray, sums: np.ndarray) -> None:
    """Add (channels, frames, window) `frames` times `taper` into `sums` (channels, (frames + 3) · window / 4) at
    hops of a quarter window: the frames' quarters are added in four strided steps, not frame by frame."""
    channels, count, window = frames.shape
    hop = window // 4
    frames = np.multiply(frames, taper, out=frames if frames.dtype == taper.dtype else None)
    quarters = frames.reshape(channels, count, 4, hop)
    blocks = sums.reshape(channels, count + 3, hop)  # a view: `sums` is contiguous along its samples
    for quarter in range(4):
        blocks[:, quarter : quarter + count] += quarters[:, :, quarter]


def _squared_magnitude(spectrum: np.ndarray) -> np.ndarray:
    """|spectrum|², float32 (the modulus squared in place: half the passes of real² + imag²)."""
    power = np.abs(spectrum)
    return np.multiply(power, power, out=power)


def _cross(spectrum: np.ndarray) -> np.ndarray | None:
    """S₀ S̄₁ (frames, bins) of a stereo (2, frames, bins) spectrum; None for mono."""
    return spectrum[0] * spectrum[1].conj() if len(spectrum) == 2 else None


def _weigh(power: np.ndarray, bins: int, gain: np.ndarray | None) -> np.ndarray:
    """A stem's power as the filters take it, (power spread over `bins` + _TINY) · weight, with `gain` = weight /
    `bins` per bin (None for 1); `power` (..., bins) may be overwritten."""
    weighted = _spread_sum(power, bins)
    weighted += np.float32(bins * _TINY)
    if gain is not None:
        weighted *= gain
    return weighted


def _sum(arrays: list[np.ndarray]) -> np.ndarray:
    """The sum of equally shaped arrays, as one new array."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


def spatial_covariance(outer: np.ndarray, power: np.ndarray) -> np.ndarray:
    """R (bins, ch, ch) from Σ Ŝ Ŝᴴ (bins, ch, ch) and Σ v (bins) over the same frames, diagonally loaded."""
    return outer / power[:, None, None] + _LOADING * np.eye(outer.shape[-1])


def _covariance_entries(diagonal: np.ndarray, cross: np.ndarray, power: np.ndarray) -> tuple:
    """`spatial_covariance` of several stems from their running sums, diagonal (stems, ch, bins), cross (stems, bins)
    and power (stems, bins), as entries: R₀₀ (stems, bins) and, for stereo, R₁₁ and R₀₁ (double precision)."""
    scale = 1 / power
    entries = [diagonal[:, channel] * scale + _LOADING for channel in range(diagonal.shape[1])]
    if len(entries) == 2:
        entries.append(cross * scale)
    return tuple(entries)


def split(
    mixture: np.ndarray, powers: list[np.ndarray], covariances: list[np.ndarray], masked: int
) -> list[np.ndarray]:
    """Both steps on one block of bins: each stem's spectrum (frames, bins, channels), in the order of `powers`.

    mixture: X (frames, bins, channels); powers: each stem's (weighted) power, X's shape; covariances: R_j of
    every stem but the `masked` one, in order. The arithmetic is the Refiner's, in single precision.
    """
    first = np.moveaxis(mixture, -1, 0).astype(np.complex64)  # channels first, as the Refiner holds its spectra
    powers = [np.moveaxis(power, -1, 0).astype(np.float32) for power in powers]
    stacked = np.stack(covariances)
    entries = [stacked[:, :, channel, channel].real for channel in range(len(first))]
    if len(first) == 2:
        entries.append(stacked[:, :, 0, 1])
    filtered = [index for index in range(len(powers)) if index != masked]
    rest = _rest(first, powers, masked)
    outputs = [first - rest] * len(powers)
    parts = _spatial_filter(rest, _variances([powers[index] for index in filtered]), tuple(entries))
    for index, part in zip(filtered, parts, strict=False):
        outputs[index] = part
    return [np.moveaxis(output, 0, -1) for output in outputs]


def _rest(mixture: np.ndarray, powers: list[np.ndarray], masked: int) -> np.ndarray:
    """X − D, the mixture less the `masked` stem's power-ratio share, per channel: (channels, frames, bins)."""
    others = _sum([power for index, power in enumerate(powers) if index != masked])
    return mixture * (others / (others + powers[masked]))


def _variances(powers: list[np.ndarray]) -> list[np.ndarray]:
    """The filtered stems' v_j (frames, bins) from their (channels, frames, bins) powers, up to a common factor per
    bin and frame (only their ratios matter): normalised to sum to one, so that the determinants of Σ v_j R_j stay
    far from float32's underflow however faint the bin."""
    variances = [power[0] + power[1] if len(power) == 2 else power[0].copy() for power in powers]
    scale = np.reciprocal(_sum(variances))
    for variance in variances:
        variance *= scale
    return variances


def _spatial_filter(rest: np.ndarray, variances: list[np.ndarray], entries: tuple) -> list[np.ndarray]:
    """Stem j's v_j R_j (Σ_k v_k R_k)⁻¹ (X − D), per frame and bin: `rest` X − D (channels, frames, bins) complex64,
    `variances` v_j (frames, bins) summing to one, `entries` the covariances' as `_covariance_entries` gives them;
    each stem's (channels, frames, bins), complex64. The stems add up to X − D.

    Stereo as v_j Σ_k v_k P_jk (X − D) / det Σ v R, with P_jk = R_j adj(R_k) (the adjugate is linear on 2 × 2
    matrices): single precision in every product over frames, yet as accurate as a double-precision solve. Where
    every stem sits near one line of the stereo field (mono estimates, the low bins of most mixes) Σ v R is nearly
    singular, its smaller eigenvalue down to the loading's 1e-3, and solving it in single precision would carry
    rounding up to 1e3-fold into the stems; here the cancellation happens per bin, in double precision, inside
    P_jk, and det Σ v R = ½ Σ_jk v_j v_k tr P_jk is a sum of terms ≥ 0.
    """
    if len(rest) == 1:  # a sum of positive terms: nothing cancels
        gains = [v * r for v, r in zip(variances, entries[0].astype(np.float32), strict=True)]
        shared = rest[0] / _sum(gains)
        return [(gain * shared)[None] for gain in gains]
    stems = len(variances)
    products, traces = _adjugate_products(*entries)
    determinant: np.ndarray | None = None
    for j, v in enumerate(variances):  # Σ_j v_j (½ v_j tr P_jj + Σ_(k>j) v_k tr P_jk)
        inner = v * (traces[j, j] / 2)
        for k in range(j + 1, stems):
            inner += variances[k] * traces[j, k]
        inner *= v
        determinant = inner if determinant is None else np.add(determinant, inner, out=determinant)
    weights = [v.astype(np.complex64) for v in variances]  # complex once, so that the products below are complex
    x0, x1 = rest
    outputs, first, second, scratch = [], np.empty_like(x0), np.empty_like(x0), np.empty_like(x0)
    for j in range(stems - 1):
        output = rest * np.multiply(variances[j], traces[j, j] / 2).astype(np.complex64)  # v_j P_jj = v_j det R_j
        for k in range(stems):
            if k == j:
                continue
            (p00, p01), (p10, p11) = products[j][k]
            np.multiply(p00, x0, out=first)  # P_jk (X − D), then times v_k
            first += np.multiply(p01, x1, out=scratch)
            np.multiply(p10, x0, out=second)
            second += np.multiply(p11, x1, out=scratch)
            output[0] += np.multiply(first, weights[k], out=first)
            output[1] += np.multiply(second, weights[k], out=second)
        assert determinant is not None  # set by the loop above: there are at least two stems here
        output *= np.divide(variances[j], determinant).astype(np.complex64)
        outputs.append(output)
    last = rest - outputs[0]  # the stems add up to X − D: the last is what the others leave
    for output in outputs[1:]:
        last -= output
    return outputs + [last]


def _adjugate_products(r00: np.ndarray, r11: np.ndarray, r01: np.ndarray) -> tuple[list, np.ndarray]:
    """P_jk = R_j adj(R_k) for Hermitian 2 × 2 R_j given by their entries (stems, bins), formed in double
    precision: P[j][k] = ((P₀₀, P₀₁), (P₁₀, P₁₁)) (bins) in single precision for every j but the last and k ≠ j (the
    filter needs no more), and tr P_jk (stems, stems, bins), float32: the mixed discriminants, symmetric, ≥ 0 for
    positive definite R, with tr P_jj = 2 det R_j."""
    stems = len(r00)
    c10 = r01.conj()
    products, traces = [], np.empty((stems, stems, r00.shape[1]), np.float32)
    for j in range(stems):
        row: list[tuple | None] = []
        for k in range(stems):
            if k >= j:
                trace = r00[j] * r11[k] + r11[j] * r00[k] - 2 * (r01[j] * c10[k]).real
                traces[j, k] = traces[k, j] = np.maximum(trace, 0)
            if j == stems - 1 or k == j:
                row.append(None)
                continue
            entries = (
                r00[j] * r11[k] - r01[j] * c10[k],
                r01[j] * r00[k] - r00[j] * r01[k],
                c10[j] * r11[k] - r11[j] * c10[k],
                r11[j] * r00[k] - c10[j] * r01[k],
            )
            p00, p01, p10, p11 = (entry.astype(np.complex64) for entry in entries)
            row.append(((p00, p01), (p10, p11)))
        products.append(row)
    return products, traces


def _pad_samples(array: np.ndarray, samples: int) -> np.ndarray:
    """(channels, samples) `array` cut or zero-padded to `samples` samples."""
    if array.shape[1] >= samples:
        return array[:, :samples]
    return np.concatenate([array, np.zeros((len(array), samples - array.shape[1]), array.dtype)], axis=1)


def refine(
    mixture: np.ndarray,
    estimates: Mapping[str, np.ndarray],
    window: int = WINDOW,
    block_frames: int = BLOCK_FRAMES,
    weights: Mapping[str, np.ndarray] | None = None,
    spread: Mapping[str, int] | None = None,
    *,
    spatial: str = "estimates",
) -> dict[str, np.ndarray]:
    """Refine whole (frames, channels) estimates against their mixture in one pass (what a stream gives)."""
    refiner = Refiner(tuple(estimates), mixture.shape[1], window, block_frames, weights, spread, spatial=spatial)
    refiner.add_mixture(mixture)
    return refiner.refine(estimates, final=True)
