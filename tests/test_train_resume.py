"""Stopping and resuming: a resumed run ends exactly where an uninterrupted one does; signals save first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synth_corpus import make_corpus
from train_helpers import phase1_options, phase2_options
from typer.testing import CliRunner

from unmix.train import OptionsError, train_phase1, train_phase2
from unmix.train.cli import app
from unmix.train.runs import read_metrics

STEPS = 6


def _assert_same_state(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "training_state.safetensors"):
        left, right = load_file(a / "checkpoint" / name), load_file(b / "checkpoint" / name)
        assert left.keys() == right.keys()
        for key in left:
            torch.testing.assert_close(left[key], right[key], rtol=0, atol=1e-7, msg=f"{name}: {key}")


def _losses(run: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(run) if record["kind"] == "train"]


def test_resumed_runs_match_uninterrupted_ones(tmp_path):
    data = make_corpus(tmp_path / "data", songs=4, seconds=1.0)
    common = dict(val_every=2, save_every=2)
    # Phase 1: codebook EMA statistics, optimizer moments and weight averages must all carry over.
    train_phase1(phase1_options(data, tmp_path / "whole1", steps=STEPS, **common))
    train_phase1(phase1_options(data, tmp_path / "split1", steps=3, **common))
    train_phase1(phase1_options(data, tmp_path / "split1", steps=STEPS, resume=True, **common))
    _assert_same_state(tmp_path / "whole1", tmp_path / "split1")
    assert _losses(tmp_path / "whole1") == _losses(tmp_path / "split1")
    # Phase 2, with remixed examples: the data order too must continue exactly.
    vqvae = tmp_path / "whole1"
    train_phase2(phase2_options(data, tmp_path / "whole2", vqvae, steps=STEPS, remix=0.5, **common))
    train_phase2(phase2_options(data, tmp_path / "split2", vqvae, steps=3, remix=0.5, **common))
    train_phase2(phase2_options(data, tmp_path / "split2", vqvae, steps=STEPS, remix=0.5, resume=True, **common))
    _assert_same_state(tmp_path / "whole2", tmp_path / "split2")
    assert _losses(tmp_path / "whole2") == _losses(tmp_path / "split2")


def test_runs_refuse_to_overwrite_or_to_resume_with_other_options(tmp_path):
    data = make_corpus(tmp_path / "data", songs=3, seconds=0.5)
    train_phase1(phase1_options(data, tmp_path / "run", steps=2))
    with pytest.raises(OptionsError, match="already holds a run"):
        train_phase1(phase1_options(data, tmp_path / "run", steps=2))
    with pytest.raises(OptionsError, match="lr: saved 0.001, given 0.002"):
        train_phase1(phase1_options(data, tmp_path / "run", steps=4, lr=2e-3, resume=True))
    with pytest.raises(OptionsError, match="no checkpoint to resume"):
        train_phase1(phase1_options(data, tmp_path / "other-run", steps=4, resume=True))


def _cli(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).with_name("unmix-train")), *arguments]


def test_sigterm_saves_a_checkpoint_that_resume_continues(tmp_path):
    data = make_corpus(tmp_path / "data", songs=3, seconds=1.0)
    run = tmp_path / "run"
    arguments = [
        "phase1",
        "--data",
        str(data),
        "--out",
        str(run),
        "--config",
        "tiny",
        "--chunk",
        "4096",
        "--batch",
        "2",
        "--save-every",
        "0",
        "--val-every",
        "0",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    environment = os.environ | {"OMP_NUM_THREADS": "1"}  # as one_torch_thread does in this process
    process = subprocess.Popen(
        _cli(*arguments, "--steps", "100000"), stderr=subprocess.PIPE, text=True, env=environment
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted at step" in stderr
    step = json.loads((run / "checkpoint" / "config.json").read_text())["step"]
    assert step == len(read_metrics(run)) >= 3  # every finished step is in the checkpoint

    finished = CliRunner().invoke(app, [*arguments, "--steps", str(step + 2), "--resume"])
    assert finished.exit_code == 0, finished.output
    assert json.loads((run / "checkpoint" / "config.json").read_text())["step"] == step + 2
    assert [record["step"] for record in read_metrics(run)] == list(range(1, step + 3))
