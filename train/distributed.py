"""Running one training process or several under torchrun (DDP, env:// rendezvous).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; then each process joins a process group (nccl on
CUDA, gloo on CPU) and uses the GPU of its local rank. The codebook keeps itself in step across
ranks (bottleneck.py all-reduces its EMA statistics and broadcasts restarts), so DDP must not also
broadcast buffers: it would overwrite every rank's codebook with rank 0's in the middle of that.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .options import OptionsError

# The switch for "no buffer broadcast before each forward": newer torch renamed it and warns on the old name.
_NO_BUFFER_SYNC = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else "broadcast_buffers"
)


@dataclass
class Cluster:
    """This process's place among the training processes, and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DDP when there are several processes, without buffer broadcasts."""
        if self.world_size == 1:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Typed Any: the keyword's name is only known at run time, so mypy cannot match it to a parameter.
        no_buffer_sync: dict[str, Any] = {_NO_BUFFER_SYNC: False}
        return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one (so all ranks stop together)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_device(name: str) -> torch.device:
    """`auto` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"device {name!r} requested but CUDA is not available")
    return device


def connect(device: str = "auto") -> Cluster:
    """Join the torchrun process group if WORLD_SIZE > 1; a single-process cluster otherwise."""
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        # Every step has the same shapes, so cuDNN's one-off search for the fastest convolutions pays back.
        torch.backends.cudnn.benchmark = True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Cluster(chosen)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", init_method="env://")
    return Cluster(chosen, rank, world_size, owns_group)
