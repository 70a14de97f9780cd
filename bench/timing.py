"""Timing loops and resource readings for one benchmark row, as measured inside its own process."""

from __future__ import annotations

import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


def timed_runs(
    run: Callable[[], object],
    repeats: int,
    *,
    warmup: Callable[[], object] | None = None,
    warmup_runs: int = 1,
    tick: Callable[[], None] = lambda: None,
) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of `repeats` calls of `run`, after `warmup_runs` untimed calls of `warmup`
    (or `run`).

    `run` must return only when its work is done (results on the host), so wall time is the real cost.
    CPU seconds are this process's, all threads together: unlike wall time they hardly change when other
    work shares the machine, which makes them the steadier figure on a busy one.
    """
    for _ in range(warmup_runs):
        (warmup or run)()
        tick()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        tick()
    return wall, cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    On Linux from /proc/self/status VmHWM, which belongs to this program's address space alone:
    ru_maxrss would also carry the RSS of the parent it was forked from (Linux keeps the larger of
    the two across exec), which is the benchmark's parent with torch loaded.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class GpuMemorySampler:
    """Peak GPU memory in use on one device while the block runs, minus what was in use before it.

    Polls NVML (the `nvidia-ml-py` package) every 5 ms from a thread; device-wide, so it is meaningful
    when nothing else uses the GPU. `peak_mib` stays None when NVML is not available.
    """

    def __init__(self, index: int = 0, interval: float = 0.005):
        self.index, self.interval = index, interval
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMemorySampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:  # no NVML library, no driver or no such GPU: leave peak_mib as None
            return self
        baseline = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        self.peak_mib = 0.0

        def poll() -> None:
            while not self._stop.is_set():
                used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
                self.peak_mib = max(self.peak_mib or 0.0, (used - baseline) / 2**20)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
