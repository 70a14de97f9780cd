"""Randomly initialised TINY models whose codes vary, for export and runtime tests."""

import torch

from unmix.train.config import TINY
from unmix.train.model import VQVAE, StemSeparator


def tiny_separator(seed: int) -> StemSeparator:
    """A random TINY separator whose codebook starts from encoder outputs, so its codes vary."""
    torch.manual_seed(seed)
    vqvae = VQVAE(TINY).eval()
    with torch.no_grad():
        embeddings = vqvae.encoder(torch.randn(2, 1, 4096))
    vqvae.codebook.init_k(embeddings.permute(0, 2, 1).reshape(-1, TINY.emb_width))
    return StemSeparator.from_vqvae(vqvae).eval()
