"""Band weights for the runtime's refinement (`unmix.runtime.refinement.BandWeights`: a gain per stem and frequency
band on the estimates' powers), fitted band by band on training songs (`unmix-export --refinement-data`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from unmix.runtime import Separator
from unmix.runtime.manifest import MANIFEST_FILE, STEMS
from unmix.runtime.refinement import (
    MASKED_FIRST,
    WINDOW,
    BandWeights,
    check_spread,
    hann,
    spatial_covariance,
    spectra,
    split,
    spread_power,
)
from unmix.train.data import find_audio, song_folders

from .audio import has_mixture, read_segment
from .checks import ExportError

REFERENCE = "other"  # the stem kept at 0 dB
SCORED_EVERY = 4  # frames: the hop is a quarter window
MAX_GAIN_DB = 30.0  # bound on each gain: beyond it a stem has left the band anyway
_TINY = 1e-30


@dataclass
class Excerpt:
    """One stretch of a training song: its mixture, true stems and the bundle's raw estimates, (frames, channels)."""

    mixture: np.ndarray
    truth: dict[str, np.ndarray]
    estimates: dict[str, np.ndarray]


def training_excerpts(
    root: str | Path,
    separate: Callable[[np.ndarray], dict[str, np.ndarray]],
    sample_rate: int,
    *,
    first: int,
    count: int,
    seconds: float,
) -> list[Excerpt]:
    """The middle `seconds` of training songs first..first+count of a MUSDB-layout folder, with `separate`'s
    estimates (a function (frames, channels) → {stem: (frames, channels)}: the bundle's raw output)."""
    songs = [song for song in song_folders(root, "train") if has_mixture(song)][first : first + count]
    if not songs:
        raise ExportError(f"{root}: no training songs (train/<song>/mixture.wav) from song {first} on")
    excerpts = []
    for song in songs:
        mixture = read_segment(find_audio(song, "mixture"), sample_rate, 0.5, seconds).T
        truth = {stem: read_segment(find_audio(song, stem), sample_rate, 0.5, seconds).T for stem in STEMS}
        if {audio.shape for audio in truth.values()} != {mixture.shape}:
            raise ExportError(f"{song}: stems and mixture differ in length or channels")
        excerpts.append(Excerpt(mixture, truth, separate(mixture)))
    return excerpts


def band_edges(bands: int, window: int = WINDOW) -> np.ndarray:
    """Bin edges of `bands` log-spaced bands over a `window`-sample STFT (the lowest bins merged into the first)."""
    edges = np.unique(np.round(np.geomspace(1, window // 2 + 1, bands + 1)).astype(int))
    edges[0] = 0
    return edges


# One excerpt's share of a band: mixture, powers per stem, covariances per filtered stem, truth per stem.
_BandPart = tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]


class _Band:
    """One band of every excerpt, ready to refine under trial gains."""

    def __init__(self, parts: list[_BandPart]):
        self.parts = parts  # per excerpt: mixture, powers per stem, covariances per filtered stem, truth per stem

    def errors(self, gains: np.ndarray) -> np.ndarray:
        """Each stem's error energy in this band with linear power `gains` (one per stem)."""
        total = np.zeros(len(STEMS))
        masked = STEMS.index(MASKED_FIRST)
        for mixture, powers, covariances, truth in self.parts:
            weighted = [power * gain + _TINY for power, gain in zip(powers, gains, strict=False)]
            for index, (output, target) in enumerate(
                zip(split(mixture, weighted, covariances, masked), truth, strict=False)
            ):
                total[index] += np.sum(np.abs(output - target) ** 2)
        return total


def _bands(excerpts: list[Excerpt], edges: np.ndarray, window: int, spread: Mapping[str, int]) -> list[_Band]:
    taper = hann(window)
    lead = np.zeros((window - window // 4, excerpts[0].mixture.shape[1]), np.float32)

    def stft(signal: np.ndarray) -> np.ndarray:
        return spectra(np.concatenate([lead, signal]), taper)

    bands: list[list[_BandPart]] = [[] for _ in edges[:-1]]
    filtered = [stem for stem in STEMS if stem != MASKED_FIRST]
    for excerpt in excerpts:
        mixture = stft(excerpt.mixture)
        estimates = {stem: stft(excerpt.estimates[stem]) for stem in STEMS}
        truth = {stem: stft(excerpt.truth[stem]) for stem in STEMS}
        powers = {stem: np.abs(spectrum) ** 2 for stem, spectrum in estimates.items()}
        spread_powers = {stem: spread_power(power, spread.get(stem, 1)) for stem, power in powers.items()}
        for band, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=False)):
            part = {stem: spectrum[:, low:high] for stem, spectrum in estimates.items()}
            covariances = [
                spatial_covariance(
                    np.einsum("tba,tbc->bac", part[stem], part[stem].conj()),
                    powers[stem][:, low:high].mean(axis=-1).sum(axis=0),
                )
                for stem in filtered
            ]
            scored = slice(None, None, SCORED_EVERY)  # copies, so that the whole spectra can be freed
            bands[band].append(
                (
                    mixture[scored, low:high].copy(),
                    [spread_powers[stem][scored, low:high].copy() for stem in STEMS],
                    covariances,
                    [truth[stem][scored, low:high].copy() for stem in STEMS],
                )
            )
    return [_Band(parts) for parts in bands]


def fit_band_weights(
    excerpts: list[Excerpt],
    sample_rate: int,
    bands: int = 16,
    window: int = WINDOW,
    spread: Mapping[str, int] | None = None,
) -> tuple[BandWeights, dict]:
    """The gains that minimise the normalised error band by band, for powers spread as `spread` says (stem → bins,
    as the runtime's refinement will spread them); returns them and a fit report (each stem's error change on
    these excerpts, and the objective per band before and after).

    The refinement works bin by bin, so each band's error depends on that band's gains alone. The fit minimises
    Σ_j E_j(band) / E_j: stem j's error energy in the band over its error energy in all bands at 0 dB, a first-order
    step on the sum of the stems' SDRs that lets no stem buy the others' loss. The reference stem stays at 0 dB,
    since only ratios matter. The spread is given, not fitted: the gains suit the powers the runtime will use. To
    keep a fit to minutes, the spatial covariances are taken over each whole excerpt (the stream's running averages
    tend to them) and the errors are scored on every 4th frame (frames overlap by 3/4, so those tile the signal).
    """
    if not excerpts:
        raise ExportError("no excerpts to fit the refinement's band weights on")
    edges = band_edges(bands, window)
    fitted = _bands(excerpts, edges, window, spread or {})
    ones = np.ones(len(STEMS))
    before = np.array([band.errors(ones) for band in fitted])  # bands × stems
    totals = before.sum(axis=0)
    free = [index for index, stem in enumerate(STEMS) if stem != REFERENCE]
    gains_db, after = [], []
    for band in fitted:

        def objective(trial: np.ndarray, band=band) -> float:  # bound now: minimize runs it in this iteration
            decibels = np.zeros(len(STEMS))
            decibels[free] = trial
            return float(np.sum(band.errors(10 ** (decibels / 10)) / totals))

        result = minimize(
            objective,
            np.zeros(len(free)),
            method="Powell",
            bounds=[(-MAX_GAIN_DB, MAX_GAIN_DB)] * len(free),
            options={"xtol": 0.5, "ftol": 1e-4},
        )
        decibels = np.zeros(len(STEMS))
        decibels[free] = result.x
        gains_db.append(np.round(decibels, 2))
        after.append(result.fun)
    gains = np.array(gains_db)
    fitted_errors = np.array(
        [band.errors(10 ** (decibels / 10)) for band, decibels in zip(fitted, gains, strict=False)]
    ).sum(axis=0)
    weights = BandWeights(
        tuple(float(edge) * sample_rate / window for edge in edges),
        {stem: tuple(float(g) for g in gains[:, index]) for index, stem in enumerate(STEMS)},
    )
    report = {  # on the excerpts fitted on: an upper bound on what unseen songs gain
        "error_change_db": {
            stem: round(float(10 * np.log10(fitted_errors[i] / totals[i])), 2) for i, stem in enumerate(STEMS)
        },
        "objective_per_band": {
            "before": np.round(np.sum(before / totals, axis=1), 5).tolist(),
            "after": np.round(after, 5).tolist(),
        },
    }
    return weights, report


def refit_bundle(
    bundle: str | Path,
    data: str | Path,
    *,
    first: int = 0,
    count: int = 24,
    seconds: float = 15.0,
    bands: int = 16,
    spread: Mapping[str, int] | None = None,
    threads: int | None = None,
) -> dict:
    """Fit band weights for `bundle` (all four stems, fp32 estimates) on `data`'s training songs, for powers spread
    as `spread` says, and store both in its manifest. Returns the manifest's new `refinement` entry."""
    separator = Separator.from_bundle(bundle, precision="fp32", refine=False, threads=threads)
    if set(separator.stems) != set(STEMS):
        raise ExportError(f"{bundle}: the refinement needs all four stems, the bundle has {', '.join(separator.stems)}")
    # checked before the estimates are made; a spread of 1 is none
    spread = {stem: bins for stem, bins in (spread or {}).items() if check_spread(stem, bins) > 1}
    rate = separator.manifest.sample_rate
    excerpts = training_excerpts(
        data, lambda mixture: separator.separate(mixture, rate), rate, first=first, count=count, seconds=seconds
    )
    weights, report = fit_band_weights(excerpts, rate, bands, spread=spread)
    entry = {
        "band_weights": weights.to_dict(),
        "spread_bins": spread,
        "fitted": {
            "data": str(data),
            "songs": f"training songs {first} to {first + len(excerpts) - 1} (by name), the middle {seconds:g} s",
            "estimates": "fp32, raw",
            "bands": bands,
            "window": WINDOW,
        }
        | report,
    }
    store_refinement(separator.bundle, entry)
    return entry


def store_refinement(bundle: str | Path, entry: dict) -> None:
    """Set the manifest's `refinement` entry (written to a temporary file, then renamed); the files it lists,
    and so their sha256, are untouched."""
    path = Path(bundle) / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["refinement"] = entry
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    temporary.replace(path)
