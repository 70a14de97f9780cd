"""Checkpoint files in the layouts Jukebox and the paper's code write, built from scratch for tests.

The official `vqvae.pth.tar` holds a three-level VQ-VAE; levels 1 and 2 use width 32, depth 4 and two
extra downsamplings each. We rebuild their key names and shapes with our own blocks so a loader can be
tested on the full 669-key file without downloading it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

from unmix.train.config import VQVAEConfig
from unmix.train.model import VQVAE, DecoderConvBlock, EncoderConvBlock


def _upper_level_state(config: VQVAEConfig) -> dict[str, torch.Tensor]:
    """State of Jukebox's `encoders.{1,2}`, `decoders.{1,2}` and level-1/2 codebooks."""
    upper = dataclasses.replace(config, width=max(config.width // 2, 4), depth=max(config.depth // 2, 1))
    state: dict[str, torch.Tensor] = {}
    for level in (1, 2):
        encoder, decoder = nn.Module(), nn.Module()
        encoder.level_blocks = nn.ModuleList()
        decoder.level_blocks = nn.ModuleList()
        for block in range(level + 1):
            shape = dataclasses.replace(upper, down_t=3 if block == 0 else 2)
            encoder.level_blocks.append(EncoderConvBlock(shape, in_channels=1 if block == 0 else config.emb_width))
            decoder.level_blocks.append(DecoderConvBlock(shape))
        decoder.out = nn.Conv1d(config.emb_width, 1, 3, 1, 1)
        state |= {f"encoders.{level}.{k}": v for k, v in encoder.state_dict().items()}
        state |= {f"decoders.{level}.{k}": v for k, v in decoder.state_dict().items()}
        state[f"bottleneck.level_blocks.{level}.k"] = torch.randn(config.codebook_size, config.emb_width)
    return state


def official_state(vqvae: VQVAE) -> dict[str, torch.Tensor]:
    """The three-level state dict of Jukebox's VQ-VAE whose level 0 is `vqvae`."""
    return vqvae.state_dict() | _upper_level_state(vqvae.config)


def make_hparams(values: dict, tmp: Path) -> object:
    """A real `jukebox.hparams.Hyperparams` instance (module written to `tmp`, then hidden again)."""
    package = tmp / "fake_jukebox" / "jukebox"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hparams.py").write_text(
        "class Hyperparams(dict):\n"
        "    def __getattr__(self, attr):\n"
        "        return self[attr]\n"
        "    def __setattr__(self, attr, value):\n"
        "        self[attr] = value\n"
    )
    sys.path.insert(0, str(package.parent))
    try:
        from jukebox.hparams import Hyperparams  # noqa: PLC0415 - only importable inside this function

        hps = Hyperparams(values)
    finally:
        sys.path.remove(str(package.parent))
    return hps


def forget_jukebox() -> None:
    """Remove the temporary `jukebox` package so loading cannot import it."""
    for name in [n for n in sys.modules if n == "jukebox" or n.startswith("jukebox.")]:
        del sys.modules[name]


def save_jukebox_style(path: Path, state: dict, hps: object = None, legacy: bool = False, prefix: str = "") -> Path:
    """torch.save of {'hps', 'model', 'opt', 'step'} as Jukebox's save_checkpoint writes it."""
    payload = {
        "hps": hps if hps is not None else {},
        "model": {prefix + k: v for k, v in state.items()},
        "opt": None,
        "step": 0,
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path
