"""The bench's quality measures: the paper's SDR (eq. 2) and the two baselines, against values derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unmix.bench.baselines import ideal_ratio_mask, scaled_mixture_estimates
from unmix.bench.fidelity import compare_stem
from unmix.bench.scores import sdr
from unmix.runtime.manifest import STEMS

RATE = 44100


def test_sdr_matches_hand_computed_values():
    # Σs² = 1 + 4 + 9 = 14, Σ(s − ŝ)² = 1: 10·log10((14 + 1e-7) / (1 + 1e-7))
    assert sdr(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0])) == pytest.approx(10 * math.log10(14 / 1), abs=1e-6)
    # ŝ = s/2 leaves a quarter of the power as error: 10·log10(4) = 6.0206 dB
    s = np.array([0.5, -0.25, 0.125, 1.0])
    assert sdr(s, s / 2) == pytest.approx(10 * math.log10(4), abs=1e-6)
    # ε keeps silence finite: silent reference and silent estimate give 0 dB; a silent estimate of a
    # signal gives 10·log10((Σs² + ε)/(Σs² + ε)) = 0 dB too
    assert sdr(np.zeros(10), np.zeros(10)) == pytest.approx(0.0)
    assert sdr(s, np.zeros_like(s)) == pytest.approx(0.0)
    # ε matters at tiny scale: Σs² = 1e-7 against a perfect estimate is 10·log10(2e-7 / 1e-7) = 3.0103 dB
    tiny = np.array([math.sqrt(1e-7)])
    assert sdr(tiny, tiny) == pytest.approx(10 * math.log10(2), abs=1e-6)


def test_sdr_is_global_over_both_channels():
    # Channel 0 perfect, channel 1 silent estimate: Σs² = 2·4, Σ(s − ŝ)² = 4 → 10·log10(2)
    reference = np.array([[2.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    estimate = reference * np.array([1.0, 0.0])
    assert sdr(reference, estimate) == pytest.approx(10 * math.log10(8 / 4), abs=1e-6)
    with pytest.raises(ValueError):
        sdr(reference, estimate[:3])


def test_scaled_mixture_of_four_equal_independent_stems_scores_10log10_4_3():
    # s_j independent, zero mean, power P; x = Σ s_k; ŝ_j = x/4 ⇒ e = Σ_{k≠j} s_k/4 − 3 s_j/4,
    # E[e²] = 3P/16 + 9P/16 = 3P/4 ⇒ SDR → 10·log10(P / (3P/4)) = 10·log10(4/3) = 1.2494 dB.
    rng = np.random.default_rng(0)
    stems = {stem: rng.standard_normal((RATE * 4, 2)) * 0.1 for stem in STEMS}
    mixture = sum(stems.values())
    estimates = scaled_mixture_estimates(mixture, STEMS)
    for stem in STEMS:
        np.testing.assert_allclose(estimates[stem], mixture / 4)
        assert sdr(stems[stem], estimates[stem]) == pytest.approx(10 * math.log10(4 / 3), abs=0.03)


def test_ideal_ratio_mask_separates_spectrally_disjoint_stems():
    t = np.arange(RATE * 3) / RATE
    frequencies = {"drums": 110.0, "bass": 700.0, "other": 2500.0, "vocals": 7000.0}
    stems = {
        stem: np.stack([np.sin(2 * np.pi * f * t), 0.5 * np.sin(2 * np.pi * f * t + 1)], axis=1) * 0.2
        for stem, f in frequencies.items()
    }
    mixture = sum(stems.values())
    estimates = ideal_ratio_mask(mixture, stems)
    for stem in STEMS:
        assert estimates[stem].shape == mixture.shape
        assert sdr(stems[stem], estimates[stem]) > 30.0
    # and the masks sum to one, so the estimates add back up to the mixture (away from the edges, where
    # the STFT's zero-padded boundary frames blur it slightly)
    np.testing.assert_allclose(sum(estimates.values())[4096:-4096], mixture[4096:-4096], atol=1e-6)


def test_ideal_ratio_mask_cannot_split_identical_stems():
    # Two identical stems share every bin half and half: each estimate is mixture/2 = the stem itself.
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((RATE, 1)) * 0.1
    estimates = ideal_ratio_mask(2 * signal, {"a": signal, "b": signal})
    assert sdr(signal, estimates["a"]) > 40.0


def test_fidelity_figures():
    rng = np.random.default_rng(2)
    truth = rng.standard_normal(4000)
    reference = truth + 0.1 * rng.standard_normal(4000)
    codes = rng.integers(0, 64, 500)
    same = compare_stem(reference, reference.copy(), truth, codes, codes.copy())
    assert same["code_agreement"] == 1.0 and same["max_abs"] == 0.0 and same["snr_db"] == math.inf
    assert same["sdr_delta_db"] == 0.0
    changed = codes.copy()
    changed[:50] += 1
    worse = reference + 0.1 * rng.standard_normal(4000)
    figures = compare_stem(reference, worse, truth, codes, changed)
    assert figures["code_agreement"] == pytest.approx(0.9)
    assert figures["snr_db"] == pytest.approx(10 * math.log10(np.sum(reference**2) / np.sum((worse - reference) ** 2)))
    assert figures["sdr_delta_db"] == pytest.approx(sdr(truth, worse) - sdr(truth, reference))
    assert figures["sdr_delta_db"] < 0
    no_codes = compare_stem(reference, worse)
    assert no_codes["code_agreement"] is None and no_codes["sdr_delta_db"] is None
