"""The VQ bottleneck: nearest-codebook quantisation with an EMA-learned codebook (Jukebox's).

The codebook `k` is a buffer, not a parameter: it learns only through the exponential moving
average of the encoder outputs assigned to each code, with dead codes restarted from random
encoder outputs. There is no codebook loss term, only the commitment loss.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def nearest_code(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the nearest code for each row of `x` (rows × width), and its squared distance.

    ‖x‖² − 2·x·kᵀ + ‖k‖², as Jukebox computes it; ties go to the lowest index (torch.min).
    """
    distance = x.pow(2).sum(-1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(-1)
    min_distance, codes = distance.min(dim=-1)
    return codes, min_distance


def _tile(x: Tensor, rows: int) -> Tensor:
    """At least `rows` rows of `x`, repeated with small noise when `x` has fewer (Jukebox's _tile)."""
    n, width = x.shape
    if n >= rows:
        return x
    repeats = (rows + n - 1) // n
    std = 0.01 / width**0.5
    x = x.repeat(repeats, 1)
    return x + torch.randn_like(x) * std


def _random_rows(x: Tensor, rows: int) -> Tensor:
    """`rows` random rows of `x` (tiled first if too short), identical on every DDP rank."""
    tiled = _tile(x, rows)
    picked = tiled[torch.randperm(tiled.shape[0], device=x.device)][:rows]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(picked, 0)
    return picked


class BottleneckBlock(nn.Module):
    """One codebook of `codebook_size` vectors of width `emb_width`.

    `k` is saved in the state dict (as Jukebox's `bottleneck.level_blocks.0.k`); the EMA
    statistics `k_sum` and `k_elem` are buffers that travel with the module but are not part
    of the state dict, exactly like Jukebox's plain attributes; training checkpoints save them
    separately so that a resumed run continues exactly.
    """

    # The buffers registered in __init__, declared so that mypy sees Tensors rather than Tensor | Module.
    k: Tensor
    k_sum: Tensor
    k_elem: Tensor
    initialised: Tensor

    def __init__(self, codebook_size: int, emb_width: int, mu: float, threshold: float = 1.0):
        super().__init__()
        self.codebook_size = codebook_size
        self.emb_width = emb_width
        self.mu = mu
        self.threshold = threshold
        self.register_buffer("k", torch.zeros(codebook_size, emb_width))
        self.register_buffer("k_sum", torch.zeros(codebook_size, emb_width), persistent=False)
        self.register_buffer("k_elem", torch.ones(codebook_size), persistent=False)
        self.register_buffer("initialised", torch.tensor(False), persistent=False)

    @torch.no_grad()
    def init_k(self, x: Tensor) -> None:
        """Start the codebook from random encoder outputs (Jukebox's init_k)."""
        self.k.copy_(_random_rows(x, self.codebook_size))
        self.k_sum.copy_(self.k)
        self.k_elem.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def restore_k(self, tokens_per_step: int, threshold: float = 1.0) -> None:
        """Seed the EMA statistics from a loaded codebook (Jukebox's restore_k).

        Each code is treated as if it had already received tokens_per_step / codebook_size
        assignments, so a pretrained codebook is not immediately overwritten by restarts.
        """
        expected = tokens_per_step / self.codebook_size
        self.k_sum.copy_(self.k * expected)
        self.k_elem.fill_(expected)
        self.threshold = threshold
        self.initialised.fill_(True)

    @torch.no_grad()
    def update_k(self, x: Tensor, codes: Tensor) -> dict[str, Tensor]:
        """One EMA step of the codebook with random restarts of rarely used codes."""
        # Sum and count of the rows assigned to each code (Jukebox's one-hot matmul, without
        # materialising the rows × codes one-hot matrix).
        batch_sum = torch.zeros_like(self.k_sum).index_add_(0, codes, x)
        batch_elem = torch.bincount(codes, minlength=self.codebook_size).to(x.dtype)
        restarts = _random_rows(x, self.codebook_size)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(batch_elem)
        old_k = self.k.clone()
        self.k_sum.mul_(self.mu).add_(batch_sum, alpha=1 - self.mu)
        self.k_elem.mul_(self.mu).add_(batch_elem, alpha=1 - self.mu)
        usage = (self.k_elem >= self.threshold).to(x.dtype).unsqueeze(1)
        self.k.copy_(usage * (self.k_sum / self.k_elem.unsqueeze(1)) + (1 - usage) * restarts)
        probs = batch_elem / batch_elem.sum()
        return {
            "entropy": -(probs * torch.log(probs + 1e-8)).sum(),
            "used_curr": (batch_elem >= self.threshold).sum().to(x.dtype),
            "usage": usage.sum(),
            "dk": torch.linalg.norm(self.k - old_k) / self.k.numel() ** 0.5,
        }

    def quantise(self, x: Tensor) -> Tensor:
        """Codes (N, T') for encoder output `x` (N, C, T')."""
        n, c, t = x.shape
        codes, _ = nearest_code(x.permute(0, 2, 1).reshape(-1, c), self.k)
        return codes.view(n, t)

    def dequantise(self, codes: Tensor) -> Tensor:
        """Code vectors (N, C, T') for codes (N, T')."""
        return F.embedding(codes, self.k).permute(0, 2, 1)

    def forward(self, x: Tensor, update_k: bool | None = None) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Quantise `x` (N, C, T'): returns codes, straight-through quantised x, commit loss, metrics.

        In training mode (or with `update_k=True`) the codebook is initialised on first use and
        updated by EMA, as in Jukebox. It runs in fp32 even under autocast: bf16 distances would
        assign codes wrongly and bias the EMA.
        """
        with torch.autocast(x.device.type, enabled=False):
            return self._quantise_and_update(x.float(), update_k)

    def _quantise_and_update(self, x: Tensor, update_k: bool | None) -> tuple[Tensor, Tensor, Tensor, dict]:
        update_k = self.training if update_k is None else update_k
        n, c, t = x.shape
        rows = x.permute(0, 2, 1).reshape(-1, c)
        if update_k and not bool(self.initialised):
            self.init_k(rows.detach())
        codes, min_distance = nearest_code(rows, self.k)
        metrics: dict[str, Tensor] = {"fit": min_distance.mean().detach()}
        if update_k:
            metrics |= self.update_k(rows.detach().float(), codes)
        quantised = self.dequantise(codes.view(n, t))
        commit_loss = (quantised.detach() - x).pow(2).mean()
        quantised = x + (quantised - x).detach()  # straight-through estimator
        return codes.view(n, t), quantised, commit_loss, metrics


class Bottleneck(nn.Module):
    """Container that reproduces Jukebox's `bottleneck.level_blocks.<i>` parameter names."""

    def __init__(self, block: BottleneckBlock):
        super().__init__()
        self.level_blocks = nn.ModuleList([block])

    @property
    def block(self) -> BottleneckBlock:
        return cast(BottleneckBlock, self.level_blocks[0])  # ModuleList items are typed Module; __init__ put it there

    def forward(self, x: Tensor, update_k: bool | None = None):
        return self.block(x, update_k)
