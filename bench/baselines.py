"""Reference separators that need no model: the lower baseline and the oracle upper bound.

ScaledMixture   every stem estimated as mixture / 4 (the Music Demixing Challenge 2021 starter kit's
                ScaledMixturePredictor; the paper's Table 2 lists it).
Ideal ratio mask (IRM) the oracle mask |S_j|² / Σ_k |S_k|² applied to the mixture's STFT (4096-sample
                Hann window, hop 1024), per channel, then inverted: what a real-valued spectrogram mask
                could do at best with that STFT, given the true stems.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import istft, stft

from unmix.train.metrics import scaled_mixture

IRM_WINDOW = 4096
IRM_HOP = 1024


def scaled_mixture_estimates(mixture: np.ndarray, stems: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every stem estimated as mixture / 4."""
    return {stem: scaled_mixture(mixture) for stem in stems}


def _stft(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """STFT of each channel of (frames, channels): (channels, bins, frames')."""
    _, _, spectrum = stft(signal.T, nperseg=window, noverlap=window - hop, window="hann", boundary="zeros", padded=True)
    return spectrum


def ideal_ratio_mask(
    mixture: np.ndarray,
    stems: dict[str, np.ndarray],
    power: float = 2.0,
    window: int = IRM_WINDOW,
    hop: int = IRM_HOP,
) -> dict[str, np.ndarray]:
    """Oracle estimates M_j ⊙ X with M_j = |S_j|^p / Σ_k |S_k|^p, for (frames, channels) float arrays."""
    frames = mixture.shape[0]
    mixture64 = mixture.astype(np.float64)
    spectra = {name: np.abs(_stft(stem.astype(np.float64), window, hop)) ** power for name, stem in stems.items()}
    total = sum(spectra.values()) + 1e-12
    mixture_spectrum = _stft(mixture64, window, hop)
    estimates = {}
    for name, spectrum in spectra.items():
        _, signal = istft(spectrum / total * mixture_spectrum, nperseg=window, noverlap=window - hop, window="hann")
        signal = signal.T[:frames]
        estimates[name] = np.pad(signal, ((0, frames - signal.shape[0]), (0, 0))).astype(np.float32)
    return estimates
