"""Shared settings for the training tests: tiny models and short chunks."""

from __future__ import annotations

from pathlib import Path

from unmix.train import TrainOptions

# Small enough for a few CPU seconds per run, long enough for the 2048-point STFTs of the losses.
QUICK = dict(
    chunk=4096,
    batch=4,
    steps=4,
    lr=1e-3,
    warmup=5,
    ema_decay=0.9,
    save_every=0,
    val_every=0,
    val_chunks=4,
    stats_chunks=8,
    workers=0,
    device="cpu",
    progress=False,
)


def phase1_options(data: Path, out: Path, **overrides) -> TrainOptions:
    return TrainOptions(data=data, out=out, **({"config": "tiny"} | QUICK | overrides))


def phase2_options(data: Path, out: Path, vqvae: Path, **overrides) -> TrainOptions:
    return TrainOptions(data=data, out=out, vqvae=str(vqvae), **(QUICK | overrides))
