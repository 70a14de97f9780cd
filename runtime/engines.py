"""What every backend's engine is (`Engine`) and where it runs (`Device`): below the backends, which import them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import BackendError


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "cuda"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(text: str) -> Device:
    """`cpu`, `cuda` or `cuda:N`."""
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text.strip().lower())
    if not match or (match[1] == "cpu" and match[2]):
        raise BackendError(f"unknown device {text!r}; use cpu, cuda or cuda:N")
    return Device(match[1], int(match[2] or 0))


class Engine(Protocol):
    stems: tuple[str, ...]
    description: str

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(items, 1, time) float32 → {stem: (items, 1, time) float32}; time a multiple of the hop."""
        ...

    def close(self) -> None:
        """Free the engine's sessions, compiled models and device memory; `run` must not be called after it.
        Closing again does nothing."""
        ...
