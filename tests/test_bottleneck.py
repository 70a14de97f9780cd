"""The EMA codebook: initialisation, update with restarts, restore_k and the straight-through path."""

import torch

from unmix.train.bottleneck import BottleneckBlock


def test_init_k_takes_rows_of_the_input():
    torch.manual_seed(0)
    block = BottleneckBlock(8, 4, mu=0.99)
    x = torch.randn(50, 4)
    block.init_k(x)
    assert all(any(torch.equal(row, candidate) for candidate in x) for row in block.k)
    assert bool(block.initialised) and torch.equal(block.k_elem, torch.ones(8))


def test_init_k_tiles_short_inputs_with_noise():
    block = BottleneckBlock(16, 4, mu=0.99)
    block.init_k(torch.zeros(3, 4))
    assert block.k.abs().max() > 0  # tiled copies carry small noise, so codes are distinct
    assert block.k.abs().max() < 0.1


def test_ema_update_matches_jukebox_formula():
    torch.manual_seed(0)
    block = BottleneckBlock(4, 2, mu=0.9, threshold=0.5)
    block.init_k(torch.randn(20, 2))
    k_sum, k_elem = block.k_sum.clone(), block.k_elem.clone()
    x = torch.randn(30, 2)
    codes = block.quantise(x.t().unsqueeze(0)).view(-1)
    block.update_k(x, codes)
    onehot = torch.nn.functional.one_hot(codes, 4).float()
    expected_sum = 0.9 * k_sum + 0.1 * onehot.t() @ x
    expected_elem = 0.9 * k_elem + 0.1 * onehot.sum(0)
    torch.testing.assert_close(block.k_sum, expected_sum)
    torch.testing.assert_close(block.k_elem, expected_elem)
    used = expected_elem >= 0.5
    torch.testing.assert_close(block.k[used], (expected_sum / expected_elem[:, None])[used])


def test_unused_codes_restart_from_inputs():
    torch.manual_seed(0)
    block = BottleneckBlock(4, 2, mu=0.5, threshold=1.0)
    block.init_k(torch.randn(10, 2))
    block.k[3] = 1e3  # never chosen
    x = torch.randn(40, 2)
    codes = block.quantise(x.t().unsqueeze(0)).view(-1)
    assert 3 not in codes
    block.update_k(x, codes)  # k_elem[3] = 0.5 < 1: restarted from a row of x
    assert any(torch.allclose(block.k[3], row) for row in x)


def test_restore_k_seeds_the_statistics():
    block = BottleneckBlock(2048, 64, mu=0.99)
    block.k.normal_()
    block.restore_k(tokens_per_step=49152)  # one 393216-sample chunk on one process
    assert torch.allclose(block.k_elem, torch.full((2048,), 24.0))
    torch.testing.assert_close(block.k_sum, block.k * 24)


def test_forward_commit_loss_and_straight_through():
    torch.manual_seed(0)
    block = BottleneckBlock(16, 4, mu=0.99).train()
    x = torch.randn(2, 4, 10, requires_grad=True)
    codes, quantised, commit, metrics = block(x)
    assert bool(block.initialised) and codes.shape == (2, 10)
    torch.testing.assert_close(commit, (block.dequantise(codes) - x).pow(2).mean())
    quantised.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # straight-through: identity gradient
    assert {"fit", "entropy", "used_curr", "usage", "dk"} <= set(metrics)


def test_eval_forward_leaves_codebook_alone():
    block = BottleneckBlock(8, 4, mu=0.99)
    block.init_k(torch.randn(20, 4))
    before = block.k.clone()
    block.eval()(torch.randn(1, 4, 30))
    assert torch.equal(block.k, before)
