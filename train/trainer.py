"""The training loop both phases share: steps, logging, validation, checkpoints and clean stops.

A phase supplies a `Task` (what is trained, its loss, its validation and its deployable weights);
the `Trainer` owns everything else: Adam with warm-up, gradient clipping, the weight EMA, DDP,
bf16 autocast on CUDA, the progress bar, `metrics.jsonl`, checkpoints every `save_every` steps and
on SIGINT/SIGTERM, and exact resumption. Each step reseeds torch's generators from
(seed, step, rank) and the data from (seed, example position), so a resumed run repeats exactly
what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checkpoint import write_checkpoint
from .config import VQVAEConfig
from .data import Song
from .distributed import Cluster
from .optim import ParameterEMA, make_optimizer, warmup_lr
from .options import TrainOptions
from .runs import RunFolder
from .sampling import ChunkSampler, StepBatches
from .stats import DataStats
from .training_state import load_training_state, state_writer


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint that `--resume` continues."""

    def __init__(self, step: int, checkpoint: Path, signal_number: int):
        super().__init__(f"interrupted at step {step}; saved {checkpoint}; continue with --resume")
        self.step, self.checkpoint, self.signal_number = step, checkpoint, signal_number


@dataclass
class Setup:
    """What a phase has resolved before training: options, process, run folder, model shape and data."""

    options: TrainOptions
    cluster: Cluster
    run: RunFolder
    resumed: dict | None  # the saved checkpoint's config.json when resuming
    config: VQVAEConfig
    sampler: ChunkSampler
    validation_songs: list[Song]
    stats: DataStats
    unseen_songs: list[Song] = dataclasses.field(default_factory=list)  # --val-data: material training never sees

    @property
    def device(self) -> torch.device:
        return self.cluster.device

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast with --precision bf16, or auto on CUDA; otherwise fp32."""
        precision = self.options.precision
        enabled = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)


class Task(ABC):
    """One phase, ready to train."""

    role: ClassVar[str]  # config.json "role" of its checkpoints

    def __init__(self, setup: Setup, stem: str, trainable: nn.Module, provenance: dict):
        self.setup, self.stem, self.trainable, self.provenance = setup, stem, trainable, provenance

    @abstractmethod
    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and its logged parts for a batch (N, sources, 1, T); `model` is `trainable`, maybe DDP-wrapped."""

    @abstractmethod
    def validate(self) -> dict[str, float | None]:
        """Validation metrics on the held-out songs (`val_sdr` at least; None where no song could be scored), and
        with `--val-data` the same on the unseen songs (`val_unseen_…`)."""

    @abstractmethod
    def deploy_state(self) -> dict[str, Tensor]:
        """The weights a checkpoint holds, taken while the weight averages are in place."""


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed torch (every device) for one step of one rank."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


class _StopSignals:
    """SIGINT/SIGTERM set a flag instead of killing the process, so the loop saves first.

    A second signal stops at once. Handlers can only be installed from the main thread.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _ignore_stop_signals(worker_id: int) -> None:
    # Data workers share the terminal's process group: a Ctrl-C must reach the trainer only, which
    # stops them itself after saving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Trainer:
    """Runs a `Task` to `options.steps`, saving to `options.out`."""

    def __init__(self, task: Task):
        self.task = task
        self.setup = task.setup
        self.options = task.setup.options
        self.cluster = task.setup.cluster
        self.parameters = [p for p in task.trainable.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.parameters, self.options.lr)
        self.ema = ParameterEMA(task.trainable, self.options.ema_decay)
        self.last_validation: dict[str, float | None] = (task.setup.resumed or {}).get("validation", {})

    def run(self) -> Path:
        """Train; returns the checkpoint folder. Raises `TrainingInterrupted` after saving on a signal."""
        options, cluster, run = self.options, self.cluster, self.setup.run
        start = self._start()
        if start >= options.steps:
            return run.checkpoint
        model = cluster.wrap(self.task.trainable)
        batches = StepBatches(self.setup.sampler, start, options.steps, options.batch, cluster.rank, cluster.world_size)
        # ChunkSampler is a map-style dataset by duck typing (__getitem__, __len__); torch's stubs want a Dataset.
        loader = DataLoader(
            cast("Dataset[np.ndarray]", self.setup.sampler),
            batch_sampler=batches,
            num_workers=options.workers,
            pin_memory=self.setup.device.type == "cuda",
            worker_init_fn=_ignore_stop_signals,
        )
        audio_seconds = options.batch * cluster.world_size * options.chunk / self.setup.config.sample_rate
        bar = tqdm(
            total=options.steps,
            initial=start,
            unit="step",
            dynamic_ncols=True,
            disable=not (cluster.is_main and options.progress),
        )
        if self.setup.resumed is None and options.val_every:
            self._validate(0)
        self.task.trainable.train()
        with _StopSignals() as signals, bar:
            tick = time.perf_counter()
            for step, batch in zip(range(start, options.steps), loader, strict=False):
                record = self._step(step, batch, model)
                record["audio_per_second"] = audio_seconds / (time.perf_counter() - tick)  # × real time
                done = step + 1
                if cluster.is_main:
                    run.log({"step": done, "kind": "train", **record})
                    self._show(bar, record)
                stopping = cluster.any(signals.received is not None)
                if not stopping and options.val_every and (done % options.val_every == 0 or done == options.steps):
                    self._validate(done)
                if stopping or done == options.steps or (options.save_every and done % options.save_every == 0):
                    self._save(done)
                if stopping:
                    raise TrainingInterrupted(done, run.checkpoint, signals.received or signal.SIGTERM)
                tick = time.perf_counter()  # throughput counts loading and the step, not validation or saving
        return run.checkpoint

    def _show(self, bar: tqdm, record: dict[str, float]) -> None:
        postfix = {"loss": f"{record['loss']:.4g}", "speed": f"{record['audio_per_second']:.1f}x"}
        if self.last_validation.get("val_sdr") is not None:
            postfix["val_sdr"] = f"{self.last_validation['val_sdr']:.2f} dB"
        bar.set_postfix(postfix)
        bar.update()

    def _start(self) -> int:
        """Restore a resumed run's state or record a fresh run's options; returns the first step."""
        run, cluster = self.setup.run, self.cluster
        start = 0
        if self.setup.resumed is not None:
            info = load_training_state(run.checkpoint, self.task.trainable, self.optimizer, self.ema)
            start = int(info["step"])
            if cluster.is_main:
                run.truncate_metrics(start)
        elif cluster.is_main:
            run.start(self.options, self.task.role, cluster.world_size)
        cluster.barrier()
        return start

    def _step(self, step: int, batch: Tensor, model: nn.Module) -> dict[str, float]:
        options = self.options
        seed_step(options.seed, step, self.cluster.rank)
        lr = warmup_lr(step, options.lr, options.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, parts = self.task.loss(model, batch.to(self.setup.device, non_blocking=True))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, options.clip)
        finite = bool(torch.isfinite(grad_norm))
        if finite:  # a non-finite gradient would poison Adam's moments and the averages
            self.optimizer.step()
            self.ema.update()
        logged = {"loss": loss, **parts}
        return {
            **{key: float(value.detach()) for key, value in logged.items()},
            "grad_norm": float(grad_norm),
            "lr": lr,
            "skipped": int(not finite),
        }

    def _validate(self, step: int) -> None:
        """Validate the averaged weights on the main process; the others wait."""
        if self.cluster.is_main and self.setup.validation_songs:
            with self.ema.applied():
                self.last_validation = self.task.validate()
            self.setup.run.log({"step": step, "kind": "val", **self.last_validation})
        self.cluster.barrier()

    def _save(self, step: int) -> None:
        """Write the checkpoint (averaged weights, info) and the training state, from the main process."""
        if self.cluster.is_main:
            with self.ema.applied():
                state = {key: value.detach().clone() for key, value in self.task.deploy_state().items()}
            info = {
                "role": self.task.role,
                "stem": self.task.stem,
                "step": step,
                "data_stats": self.setup.stats.to_dict(),
                "provenance": self.task.provenance,
                "training": self._recipe(),
                "validation": self.last_validation,
            }
            writer = state_writer(step, self.task.trainable, self.optimizer, self.ema)
            write_checkpoint(self.setup.run.checkpoint, state, self.setup.config, info, extra=writer)
        self.cluster.barrier()

    def _recipe(self) -> dict:
        options = self.options
        return {
            "data": str(options.data),
            "batch": options.batch,
            "chunk": options.chunk,
            "world_size": self.cluster.world_size,
            "seed": options.seed,
            "lr": options.lr,
            "warmup": options.warmup,
            "clip": options.clip,
            "ema_decay": options.ema_decay,
            "remix": options.remix,
            "shift": options.shift,
            "blend": options.blend,
            "augmentation": dataclasses.asdict(options.augmentation),
        }
