"""The paper's training losses: Jukebox's VQ-VAE loss for phase 1 and the encoder-matching loss of phase 2.
The codebook has no loss term: it learns only by its EMA update (see bottleneck.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .stats import DataStats

TOPK = 2048  # Jukebox's linf_k
TOPK_WEIGHT = 0.02  # lmix_linf (lmix_l2 is 1, lmix_l1 is 0)
COMMIT_WEIGHT = 0.02
MULTISPEC_RESOLUTIONS = ((2048, 240, 1200), (1024, 120, 600), (512, 50, 240))  # (n_fft, hop, window)


def stft_magnitude(x: Tensor, n_fft: int, hop: int, window: int) -> Tensor:
    """|STFT| of (N, T) signals, as Jukebox takes it (centred, reflect-padded, Hann window)."""
    hann = torch.hann_window(window, device=x.device, dtype=x.dtype)
    return torch.stft(x, n_fft, hop, window, hann, center=True, pad_mode="reflect", return_complex=True).abs()


def squared_error_terms(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Mean squared error, and the mean of each item's `TOPK` largest squared errors (k capped at its size)."""
    squared = (prediction - target).pow(2).reshape(target.shape[0], -1)
    top = squared.topk(min(TOPK, squared.shape[1]), dim=1).values
    return squared.mean(), top.mean()


def multispectral_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean over items of the resolution-averaged Frobenius distance between STFT magnitudes."""
    prediction, target = prediction.reshape(prediction.shape[0], -1), target.reshape(target.shape[0], -1)
    distances = [
        (stft_magnitude(prediction, *r) - stft_magnitude(target, *r)).flatten(1).norm(dim=1)
        for r in MULTISPEC_RESOLUTIONS
    ]
    return torch.stack(distances).mean()


def vqvae_loss(target: Tensor, reconstruction: Tensor, commit: Tensor, stats: DataStats) -> tuple[Tensor, dict]:
    """Phase-1 loss of a reconstruction (N, 1, T) and its parts for logging.

    Jukebox's, unchanged by the paper, with the data statistics `l2` and `spec` of `DataStats`:
      recons    = (mean e² + 0.02 · mean(top-2048 per item of e²)) / l2,   e = x̂ − x
      multispec = mean over items and 3 resolutions of ‖ |STFT(x)| − |STFT(x̂)| ‖_F / spec
      loss      = recons + multispec + 0.02 · commit
    """
    l2, topk = squared_error_terms(reconstruction, target)
    recons = (l2 + TOPK_WEIGHT * topk) / stats.l2
    multispec = multispectral_loss(reconstruction, target) / stats.spec
    loss = recons + multispec + COMMIT_WEIGHT * commit
    return loss, {"recons": recons, "multispec": multispec, "commit": commit}


def encoder_loss(prediction: Tensor, target: Tensor) -> tuple[Tensor, dict]:
    """Phase-2 loss between ME and SE embeddings (N, C, T'), unnormalised, and its parts.

    Phase 1's recons without the division by `l2`, between ME(mixture) and the frozen SE(stem), both taken
    before quantisation.
    """
    l2, topk = squared_error_terms(prediction, target)
    return l2 + TOPK_WEIGHT * topk, {"l2": l2, "topk": topk}
