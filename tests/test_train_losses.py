"""Losses, normalisation statistics, the SDR and the optimiser pieces, against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unmix.train.losses import encoder_loss, multispectral_loss, squared_error_terms, vqvae_loss
from unmix.train.metrics import scaled_mixture, sdr
from unmix.train.optim import ParameterEMA, warmup_lr
from unmix.train.stats import DataStats, measure_stats


def test_topk_term_takes_each_item_s_largest_errors_capped_at_its_length():
    target = torch.zeros(2, 1, 3000)
    prediction = torch.zeros(2, 1, 3000)
    prediction[0, 0, :10] = 2.0  # item 0: ten errors of 4, the rest 0
    l2, topk = squared_error_terms(prediction, target)
    assert l2.item() == pytest.approx(40 / 6000)
    assert topk.item() == pytest.approx((40 / 2048 + 0) / 2)  # k = 2048 per item, averaged over both
    short_l2, short_topk = squared_error_terms(torch.ones(1, 1, 100), torch.zeros(1, 1, 100))
    assert short_topk.item() == 1.0  # k capped at the 100 values


def test_phase1_loss_is_normalised_by_the_data_statistics():
    torch.manual_seed(0)
    x, x_hat = torch.randn(2, 1, 8192), torch.randn(2, 1, 8192)
    commit = torch.tensor(3.0)
    loss, parts = vqvae_loss(x, x_hat, commit, DataStats(l2=1.0, l1=1.0, spec=1.0))
    halved, halved_parts = vqvae_loss(x, x_hat, commit, DataStats(l2=2.0, l1=1.0, spec=4.0))
    l2, topk = squared_error_terms(x_hat, x)
    assert parts["recons"].item() == pytest.approx((l2 + 0.02 * topk).item())
    assert halved_parts["recons"].item() == pytest.approx(parts["recons"].item() / 2)
    assert halved_parts["multispec"].item() == pytest.approx(parts["multispec"].item() / 4)
    assert loss.item() == pytest.approx((parts["recons"] + parts["multispec"] + 0.02 * commit).item())
    assert vqvae_loss(x, x, torch.tensor(0.0), DataStats(1, 1, 1))[0].item() == 0.0


def test_multispectral_loss_is_a_distance_between_magnitudes():
    torch.manual_seed(0)
    a, b = torch.randn(3, 1, 8192), torch.randn(3, 1, 8192)
    assert multispectral_loss(a, a).item() == 0.0
    assert multispectral_loss(-a, a).item() == pytest.approx(0.0, abs=1e-3)  # same magnitudes
    assert multispectral_loss(2 * a, 2 * b).item() == pytest.approx(2 * multispectral_loss(a, b).item(), rel=1e-5)


def test_phase2_loss_is_unnormalised_mse_plus_topk():
    torch.manual_seed(0)
    prediction, target = torch.randn(2, 16, 512), torch.randn(2, 16, 512)
    loss, parts = encoder_loss(prediction, target)
    assert parts["l2"].item() == pytest.approx(torch.mean((prediction - target) ** 2).item())
    assert loss.item() == pytest.approx((parts["l2"] + 0.02 * parts["topk"]).item())


def test_stats_follow_jukebox_calculate_bandwidth():
    square = np.where(np.arange(8192) // 64 % 2, 0.25, -0.25)
    chunks = [np.stack([square, square]), np.stack([square, square])]
    stats = measure_stats(chunks)
    assert stats.l2 == pytest.approx(0.0625, rel=1e-6)  # variance of ±0.25
    assert stats.l1 == pytest.approx(0.25)
    assert stats.spec > 0
    assert DataStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(ValueError, match="silent"):
        measure_stats([np.zeros((2, 8192))])


def test_sdr_is_the_paper_s_equation_2():
    s = np.sin(np.arange(1000) / 10.0)
    assert sdr(s, s / 2) == pytest.approx(10 * math.log10(4), abs=1e-6)
    assert sdr(s, np.zeros_like(s)) == pytest.approx(0.0, abs=1e-6)
    assert sdr(np.zeros(10), np.zeros(10)) == pytest.approx(0.0)  # ε / ε
    exact = 10 * math.log10((np.sum(s**2) + 1e-7) / 1e-7)  # only ε left in the denominator
    assert sdr(s, scaled_mixture(4 * s)) == pytest.approx(exact)
    with pytest.raises(ValueError, match="differ in shape"):
        sdr(s, s[:-1])


def test_warmup_is_linear_from_zero():
    assert [warmup_lr(step, 3e-4, 100) for step in (0, 50, 100, 5000)] == pytest.approx([0, 1.5e-4, 3e-4, 3e-4])


def test_weight_average_updates_and_swaps_back_exactly():
    layer = torch.nn.Linear(3, 2)
    ema = ParameterEMA(layer, decay=0.75)
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.state_dict()["weight"], start + 0.25)
    live = layer.weight.detach().clone()
    with ema.applied():
        torch.testing.assert_close(layer.weight, start + 0.25)
    assert torch.equal(layer.weight, live)
