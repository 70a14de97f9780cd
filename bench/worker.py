"""One benchmark row in a process of its own: `python -m unmix.bench.worker JOB.json`.

A fresh process per row makes its peak RSS (and GPU memory) that row's alone, keeps one backend's
thread pools and allocator caches from slowing the next, and turns a crash into a failed row rather
than a failed benchmark. A runtime row never imports torch, so its memory is the lean runtime's.

The worker prints JSON lines on stdout: `{"tick": 1}` after each warm-up or timed run (the parent's
progress bar), then one `{"result": {...}}`.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .timing import GpuMemorySampler, median, peak_rss_mib, timed_runs


class Unavailable(RuntimeError):
    """This row cannot run on this machine (a missing GPU, provider, library or bundle precision)."""


@dataclass
class Job:
    kind: str  # "time": RTF runs; "fidelity": one run whose outputs and codes are saved for comparison
    backend: str  # "pytorch", "ort" or "trt"
    variant: str  # a PyTorch variant (reference.TORCH_VARIANTS) or a bundle precision
    device: str  # "cpu", "cuda" or "cuda:N"
    scope: str  # "chunk": the mono paper chunk in memory; "track": a stereo file, decode → separate → write
    stems: list[str]
    threads: int
    sample_rate: int
    chunk_file: str  # .npy: the mono paper chunk
    track_file: str  # .wav: the stereo track
    warmup_file: str  # .wav: a short stereo excerpt the track rows warm up on
    scratch: str  # folder the track rows write their stems to
    model: dict = field(default_factory=dict)  # PyTorch weights: {"config": {...}, "seed": n} or {"checkpoints": {...}}
    bundle: str | None = None
    chunk: int = 393216
    warmup: int = 1
    repeats: int = 3
    output: str | None = None  # fidelity: the .npz to write

    @classmethod
    def load(cls, path: str | Path) -> Job:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))


def emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


# ---- PyTorch rows ----------------------------------------------------------------------------


def torch_paths(job: Job) -> dict:
    """The paper-style path of each stem, for `job.variant` on `job.device`."""
    import torch

    from .models import torch_separators
    from .reference import PaperStylePath

    if job.device.startswith("cuda") and not torch.cuda.is_available():
        raise Unavailable(f"PyTorch {torch.__version__} sees no CUDA device here")
    torch.set_num_threads(job.threads)
    if job.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    separators = torch_separators(job.model, job.stems)
    return {
        stem: PaperStylePath(separator, job.device, job.variant, job.chunk) for stem, separator in separators.items()
    }


def torch_workload(job: Job, paths: dict) -> tuple[Callable[[], object], Callable[[], object]]:
    """(run, warm-up) callables for the chunk or the track."""
    if job.scope == "chunk":
        chunk = np.load(job.chunk_file)
        run = lambda: [path(chunk) for path in paths.values()]  # noqa: E731
        return run, run

    def separate_file(source: str) -> None:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)  # the paper reads with librosa.load(mono=True): the channel mean
        subtype = sf.info(source).subtype
        for stem, path in paths.items():
            sf.write(Path(job.scratch) / f"{stem}.wav", path(mono), rate, subtype=subtype)

    return lambda: separate_file(job.track_file), lambda: separate_file(job.warmup_file)


def torch_memory(job: Job) -> dict:
    if not job.device.startswith("cuda"):
        return {}
    import torch

    return {"torch_peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}


# ---- runtime rows (ONNX Runtime, TensorRT) -------------------------------------------------


def runtime_separator(job: Job):
    """The lean runtime's `Separator` for this row; its BackendError means the row is unavailable here."""
    from unmix.runtime import BackendError, Separator

    try:
        return Separator.from_bundle(
            job.bundle,
            device=job.device,
            backend=job.backend,
            threads=job.threads,
            stems=job.stems,
            precision=job.variant,
        )
    except BackendError as error:
        raise Unavailable(str(error)) from None


def runtime_workload(job: Job, separator) -> tuple[Callable[[], object], Callable[[], object]]:
    if job.scope == "chunk":
        chunk = np.load(job.chunk_file)
        run = lambda: separator.separate(chunk, job.sample_rate)  # noqa: E731
        return run, run
    return (
        lambda: separator.separate_file(job.track_file, job.scratch, overwrite=True),
        lambda: separator.separate_file(job.warmup_file, job.scratch, overwrite=True),
    )


# ---- the job -----------------------------------------------------------------------------------


def run_time(job: Job) -> dict:
    tick = lambda: emit({"tick": 1})  # noqa: E731
    device_index = int(job.device.split(":")[1]) if ":" in job.device else 0
    with GpuMemorySampler(device_index) as gpu:
        if job.backend == "pytorch":
            run, warmup = torch_workload(job, torch_paths(job))
        else:
            run, warmup = runtime_workload(job, runtime_separator(job))
        seconds = timed_runs(run, job.repeats, warmup=warmup, warmup_runs=job.warmup, tick=tick)
    result = {"seconds": seconds, "median_s": median(seconds), "peak_rss_mib": peak_rss_mib()}
    if gpu.peak_mib is not None and job.device.startswith("cuda"):
        result["gpu_peak_mib"] = gpu.peak_mib
    if job.backend == "pytorch":
        result |= torch_memory(job)
    return result


def run_fidelity(job: Job) -> dict:
    """Each stem's output and codes on the mono chunk, saved to `job.output`.

    ONNX Runtime rows run the bundle's graphs directly (the runtime returns no codes; on one chunk its
    exact chunking gives the same audio); TensorRT rows go through the runtime and give audio only.
    """
    from .graphs import BundleGraphs

    chunk = np.load(job.chunk_file)
    arrays = {}
    if job.backend == "pytorch":
        for stem, path in torch_paths(job).items():
            arrays[f"audio/{stem}"] = path(chunk)
            arrays[f"codes/{stem}"] = path.last_codes
    elif job.backend == "ort":
        runtime_separator(job)  # the same availability checks as the timed rows
        graphs = BundleGraphs(job.bundle, job.variant, job.stems, job.device, job.threads)
        for stem, (audio, codes) in graphs(chunk[None]).items():
            arrays[f"audio/{stem}"], arrays[f"codes/{stem}"] = audio[0], codes[0]
    else:
        for stem, audio in runtime_separator(job).separate(chunk, job.sample_rate).items():
            arrays[f"audio/{stem}"] = np.asarray(audio, np.float32).reshape(-1)
    np.savez(job.output, **arrays)
    return {"output": job.output}


def main(argv: list[str]) -> int:
    job = Job.load(argv[1])
    try:
        result = run_time(job) if job.kind == "time" else run_fidelity(job)
        emit({"result": {"status": "ok"} | result})
    except Unavailable as error:
        emit({"result": {"status": "unavailable", "message": str(error)}})
    except Exception as error:  # any other failure is this row's, reported with its cause; the run goes on
        traceback.print_exc()
        emit(
            {
                "result": {
                    "status": "failed",
                    "message": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                }
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
