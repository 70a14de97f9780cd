"""NVIDIA GPUs as nvidia-smi lists them: the one place that runs it, for `unmix doctor`, the TensorRT engine cache
and the benchmarks' record of the machine. Standard library only, so that any layer may import it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from .errors import UnmixError

FIELDS = "index,name,compute_cap,memory.total,driver_version"
TIMEOUT_S = 20


class GpuQueryError(UnmixError):
    """nvidia-smi could not list the GPUs asked for: no such GPU, no driver loaded, no answer."""


class NoNvidiaSmi(GpuQueryError):
    """nvidia-smi is not installed: this machine has no NVIDIA driver."""


@dataclass(frozen=True)
class NvidiaGpu:
    index: int  # nvidia-smi's numbering (PCI bus order), not CUDA_VISIBLE_DEVICES's
    name: str
    compute_capability: str  # "9.0"
    memory_mib: int | None  # None where the driver does not report it
    driver: str


def nvidia_gpus(selector: str | None = None) -> list[NvidiaGpu]:
    """Every GPU nvidia-smi lists, or only `selector` (an index, UUID or PCI bus id, as `nvidia-smi --id` takes).

    Raises `NoNvidiaSmi` where nvidia-smi is missing and `GpuQueryError` (one line) where it fails, e.g. for a
    machine whose driver is not loaded, one without GPUs, or a `selector` that names none.
    """
    executable = shutil.which("nvidia-smi")
    if executable is None:
        raise NoNvidiaSmi("nvidia-smi is missing")
    command = [executable, f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits"]
    if selector is not None:
        command.insert(1, f"--id={selector}")
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GpuQueryError(f"nvidia-smi did not answer within {TIMEOUT_S} s") from None
    except OSError as error:
        raise GpuQueryError(f"nvidia-smi cannot run: {error.strerror or error}") from None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        said = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise GpuQueryError("; ".join(said) or "nvidia-smi found none")
    return [_parse(line) for line in lines]


def _parse(line: str) -> NvidiaGpu:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) < 5 or not parts[0].isdigit():
        raise GpuQueryError(f"unexpected nvidia-smi output: {line!r}")
    index, *name, capability, memory, driver = parts
    try:
        memory_mib = int(float(memory))
    except ValueError:  # "[N/A]"
        memory_mib = None
    return NvidiaGpu(int(index), ", ".join(name), capability, memory_mib, driver)
