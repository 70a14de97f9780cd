"""A tiny real bundle for the runtime tests, exported once per test session with `unmix.export`.

The tests may use torch and unmix.export to build it; the runtime under test never imports them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unmix.export import export_bundle
from unmix.export.audio import synthetic_audio
from unmix.train.config import TINY
from unmix.train.model import VQVAE, StemSeparator

STEMS = ("bass", "vocals")  # two stems keep the export quick; stem selection still has a choice
_built: dict[str, Path] = {}


def tiny_separator(seed: int) -> StemSeparator:
    """A random TINY separator whose codebook starts from encoder outputs, so its codes vary."""
    torch.manual_seed(seed)
    vqvae = VQVAE(TINY).eval()
    with torch.no_grad():
        embeddings = vqvae.encoder(torch.randn(2, 1, 4096))
    vqvae.codebook.init_k(embeddings.permute(0, 2, 1).reshape(-1, TINY.emb_width))
    return StemSeparator.from_vqvae(vqvae).eval()


def tiny_bundle(tmp_path_factory) -> Path:
    """The session's bundle (built on first use)."""
    if "tiny" not in _built:
        folder = tmp_path_factory.mktemp("runtime-bundle") / "tiny"
        export_bundle(
            {stem: tiny_separator(seed) for seed, stem in enumerate(STEMS, start=1)},
            folder,
            provenance={"source": "tests/runtime_bundle.py: random TINY separators"},
            parity_audio=synthetic_audio(TINY.sample_rate, TINY.hop_length, segments=1, seconds=0.5),
        )
        _built["tiny"] = folder
    return _built["tiny"]
