"""Two gloo processes (DDP, env:// rendezvous) keep identical weights and codebooks while seeing different data."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from synth_corpus import make_corpus
from train_helpers import phase1_options

from unmix.train.distributed import connect
from unmix.train.phases import build_phase1
from unmix.train.trainer import Trainer

STEPS = 4


def _rank(rank: int, port: int, data: Path, out: Path) -> None:
    os.environ |= {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
    }
    torch.set_num_threads(1)
    options = phase1_options(data, out / "run", batch=2, steps=STEPS, save_every=2, val_every=2)
    with connect("cpu") as cluster:
        task = build_phase1(options, cluster)
        first_codebook = None if rank else task.vqvae.codebook.k.clone()  # zeros: a scratch run's codebook
        Trainer(task).run()
        state = dict(task.vqvae.named_parameters()) | dict(task.vqvae.named_buffers())
        save_file({key: value.detach().contiguous() for key, value in state.items()}, out / f"rank{rank}.safetensors")
        if first_codebook is not None:
            assert torch.equal(first_codebook, torch.zeros_like(first_codebook))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_stay_in_step(tmp_path):
    data = make_corpus(tmp_path / "data", songs=3, seconds=1.0)
    mp.spawn(_rank, args=(_free_port(), data, tmp_path), nprocs=2)
    ranks = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=1e-6, msg=key)
    codebook = "bottleneck.level_blocks.0."
    assert bool(ranks[0][codebook + "initialised"]) and ranks[0][codebook + "k"].abs().sum() > 0
    # The EMA statistics count the tokens of both ranks: 2 ranks × batch 2 × 4096/8 codes per step.
    expected_tokens = sum(0.01 * 0.99**age for age in range(STEPS)) * 2 * 2 * (4096 // 8)
    assert ranks[0][codebook + "k_elem"].sum().item() == pytest.approx(expected_tokens + 64 * 0.99**STEPS, rel=1e-4)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in metrics if '"kind": "train"' in line]) == STEPS  # only rank 0 logs
