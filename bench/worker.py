"""One benchmark row × workload in a process of its own: `python -m unmix.bench.worker JOB.json`, as rtf.py runs
it. The worker loads the row's models, warms up, times the runs and prints the result as JSON lines on stdout.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .timing import GpuMemorySampler, median, peak_rss_mib, timed_runs


class Unavailable(RuntimeError):
    """This row cannot run on this machine (a missing GPU, provider, library or bundle precision)."""


@dataclass
class Job:
    backend: str  # "pytorch", "ort", "openvino", "trt", "auto" (unmix separate's defaults) or "peer"
    variant: str  # a PyTorch variant (reference.TORCH_VARIANTS), a precision ("auto" too), or a peer's name
    device: str  # "cpu", "cuda" or "cuda:N"
    scope: str  # "chunk": the mono paper chunk in memory; "track": a stereo file, decode → separate → write
    stems: list[str]
    threads: int
    sample_rate: int
    chunk_file: str  # .npy: the mono paper chunk
    track_file: str  # .wav: the stereo track
    warmup_file: str  # .wav: a short stereo excerpt the track rows warm up on
    scratch: str  # folder the track rows write their stems to
    model: dict = field(default_factory=dict)  # PyTorch weights, for `models.torch_separators`
    bundle: str | None = None
    chunk: int = 393216
    warmup: int = 1
    repeats: int = 3
    output: str | None = None  # where to save the fidelity capture (.npz), if anywhere

    @classmethod
    def load(cls, path: str | Path) -> Job:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))


def emit(message: dict) -> None:
    """Print one JSON line for the parent (`rtf.run_worker`): `{"tick": 1}` after each warm-up or timed run and after
    the fidelity capture (the parent's progress bar), then one `{"result": {...}}`."""
    print(json.dumps(message), flush=True)


Workload = tuple[Callable[[], object], Callable[[], object], Callable[[np.ndarray], dict[str, np.ndarray]]]


# ---- PyTorch rows ----------------------------------------------------------------------------


def torch_workload(job: Job) -> Workload:
    """(run, warm-up, capture) for the paper-style path of each stem, `job.variant` on `job.device`."""
    import torch

    from .models import torch_separators
    from .reference import PaperStylePath

    if job.device.startswith("cuda") and not torch.cuda.is_available():
        raise Unavailable(f"PyTorch {torch.__version__} sees no CUDA device here")
    torch.set_num_threads(job.threads)
    if job.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    separators = torch_separators(job.model, job.stems)
    paths = {stem: PaperStylePath(sep, job.device, job.variant, job.chunk) for stem, sep in separators.items()}

    def capture(chunk: np.ndarray) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for stem, path in paths.items():
            audio = path(chunk)
            assert path.last_codes is not None  # every call of a PaperStylePath sets its codes
            arrays[f"audio/{stem}"], arrays[f"codes/{stem}"] = audio, path.last_codes
        return arrays

    if job.scope == "chunk":
        chunk = np.load(job.chunk_file)
        run = lambda: [path(chunk) for path in paths.values()]  # noqa: E731
        return run, run, capture

    def separate_file(source: str) -> None:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)  # the paper reads with librosa.load(mono=True): the channel mean
        subtype = sf.info(source).subtype
        for stem, path in paths.items():
            sf.write(Path(job.scratch) / f"{stem}.wav", path(mono), rate, subtype=subtype)

    return lambda: separate_file(job.track_file), lambda: separate_file(job.warmup_file), capture


def torch_memory(job: Job) -> dict:
    if not job.device.startswith("cuda"):
        return {}
    import torch

    return {"torch_peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}


# ---- runtime rows (ONNX Runtime, TensorRT) -------------------------------------------------


def runtime_workload(job: Job) -> Workload:
    """(run, warm-up, capture) through the lean runtime's `Separator`, as users run it. A runtime row never imports
    torch, so its memory is the lean runtime's."""
    from unmix.runtime import BackendError, Separator

    precision, _, stereo = job.variant.partition("/")  # "fp32/per-channel": a precision and a stereo mode
    try:
        separator = Separator.from_bundle(
            job.bundle,
            device=job.device,
            backend=job.backend,
            threads=job.threads,
            stems=job.stems,
            precision=precision,
            # all stems: refined, as `unmix separate` runs them; one stem: that graph alone (refinement would
            # run all four), the paper's per-stem path
            refine=None if len(job.stems) > 1 else False,
            stereo=(stereo or None) if len(job.stems) > 1 else None,
        )
    except BackendError as error:
        raise Unavailable(str(error)) from None

    def capture(chunk: np.ndarray) -> dict[str, np.ndarray]:
        """ONNX Runtime rows run the bundle's graphs directly (the runtime keeps the codes to itself; on one
        chunk its exact chunking gives the same audio); TensorRT rows give the runtime's audio only."""
        if job.backend == "ort":
            from .graphs import BundleGraphs

            assert job.bundle is not None  # runtime rows always name their bundle (and `from_bundle` above read it)
            graphs = BundleGraphs(job.bundle, precision, job.stems, job.device, job.threads)
            outputs = graphs(chunk[None])
            return {
                f"{kind}/{stem}": value[0]
                for stem, pair in outputs.items()
                for kind, value in zip(("audio", "codes"), pair, strict=False)
            }
        return {f"audio/{stem}": audio for stem, audio in separator.separate(chunk, job.sample_rate).items()}

    if job.scope == "chunk":
        chunk = np.load(job.chunk_file)
        run = lambda: separator.separate(chunk, job.sample_rate)  # noqa: E731
        return run, run, capture
    return (
        lambda: separator.separate_file(job.track_file, job.scratch, overwrite=True),
        lambda: separator.separate_file(job.warmup_file, job.scratch, overwrite=True),
        capture,
    )


# ---- peers (HT-Demucs, Open-Unmix) ------------------------------------------------------------


def peer_workload(job: Job) -> Workload:
    """(run, warm-up, capture) of a peer separator on the stereo track file (`peers.py`)."""
    from .peers import PeerUnavailable, peer_separator, separate_track

    try:
        separate = peer_separator(job.variant, job.threads)
    except PeerUnavailable as error:
        raise Unavailable(str(error)) from None
    return (
        lambda: separate_track(separate, job.track_file, job.scratch),
        lambda: separate_track(separate, job.warmup_file, job.scratch),
        lambda chunk: {},
    )


# ---- the job -----------------------------------------------------------------------------------


def run_job(job: Job) -> dict:
    """Load, warm up, time; peak memory; then the fidelity capture when `job.output` asks for it: each stem's
    output and codes on the chunk, from the models already loaded."""
    tick = lambda: emit({"tick": 1})  # noqa: E731
    device_index = int(job.device.split(":")[1]) if ":" in job.device else 0
    with GpuMemorySampler(device_index) as gpu:
        workload = {"pytorch": torch_workload, "peer": peer_workload}.get(job.backend, runtime_workload)
        run, warmup, capture = workload(job)
        seconds, cpu_seconds = timed_runs(run, job.repeats, warmup=warmup, warmup_runs=job.warmup, tick=tick)
    result = {
        "seconds": seconds,
        "median_s": median(seconds),
        "cpu_seconds": cpu_seconds,
        "median_cpu_s": median(cpu_seconds),
        "peak_rss_mib": peak_rss_mib(),
    }
    if gpu.peak_mib is not None and job.device.startswith("cuda"):
        result["gpu_peak_mib"] = gpu.peak_mib
    if job.backend == "pytorch":
        result |= torch_memory(job)
    if job.output:
        # Any: numpy's stub lets **kwds fill savez's `allow_pickle: bool`; the keys here are "audio/…" and "codes/…"
        arrays: dict[str, Any] = capture(np.load(job.chunk_file))
        np.savez(job.output, **arrays)
        result["output"] = job.output
        tick()
    return result


def main(argv: list[str]) -> int:
    """Run the job file `argv[1]` and emit its result; returns 0 even when the row fails (its result says so).

    One process per row makes its peak RSS (and GPU memory) that row's alone, keeps one backend's thread pools
    and allocator caches from slowing the next, and turns a crash into a failed row rather than a failed benchmark.
    """
    job = Job.load(argv[1])
    try:
        emit({"result": {"status": "ok"} | run_job(job)})
    except Unavailable as error:
        emit({"result": {"status": "unavailable", "message": str(error)}})
    except Exception as error:  # any other failure is this row's, reported with its cause; the run goes on
        traceback.print_exc()
        message = str(error).splitlines()[0] if str(error) else ""
        emit({"result": {"status": "failed", "message": f"{type(error).__name__}: {message}"}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
