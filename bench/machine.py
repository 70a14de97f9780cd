"""What a benchmark ran on: CPU, cores, threads, GPU, library versions, TF32 state, source revision."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from unmix.runtime.gpus import GpuQueryError, nvidia_gpus

LIBRARIES = ("unmix", "numpy", "scipy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "museval")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask), which is what thread counts should follow."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The source checkout's commit (with `+dirty` when it has local changes), if it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def gpu_info() -> list[dict]:
    """Name, memory and driver of each NVIDIA GPU, from nvidia-smi; empty when there is none."""
    try:
        gpus = nvidia_gpus()
    except GpuQueryError:
        return []
    return [
        {
            "name": gpu.name,
            "memory_mib": gpu.memory_mib,
            "driver": gpu.driver,
            "compute_capability": gpu.compute_capability,
        }
        for gpu in gpus
    ]


def torch_cuda_state() -> dict:
    """CUDA, cuDNN and TF32 settings as torch sees them (TF32 silently changes "fp32" results on Ampere+)."""
    try:
        import torch
    except ImportError:
        return {}
    state = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        state |= {
            "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "device_name": torch.cuda.get_device_name(0),
        }
    return state


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(
    threads: int | None = None, load_at_start: list[float] | None = None, revision_at_start: str | None = None
) -> dict:
    """Everything the report states about the machine; `threads` is the count the benchmark used.

    Called after the measurements, so the parent process never holds a CUDA context while rows run;
    pass the load average read at the start (other work on a shared machine skews every timing) and the
    revision read at the start (the code that ran: a commit made during a long run is not it).
    """
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        physical, memory_gib = None, None
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cores_physical": physical,
        "cores_logical": os.cpu_count(),
        "cores_usable": usable_cores(),
        "threads": threads,
        "memory_gib": memory_gib,
        "load_average": load_at_start or load_average(),
        "load_average_at_end": load_average(),
        "gpus": gpu_info(),
        "torch_cuda": torch_cuda_state(),
        "onnxruntime_providers": onnxruntime_providers(),
        "libraries": library_versions(),
        "revision": revision_at_start or git_revision(),
    }
