"""Real-time factor of every way of running the separator, side by side with the paper-style PyTorch reference
measured in the same run. Each row × workload runs in a fresh worker process (worker.py), so that its time and
peak memory are its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from unmix.export.audio import synthetic_audio
from unmix.runtime.backends import COMPUTED_PRECISIONS
from unmix.runtime.manifest import STEMS, read_manifest
from unmix.train.config import resolve_config

from .fidelity import compare_outputs
from .machine import git_revision, load_average, machine_info, usable_cores
from .models import RANDOM_WEIGHTS_NOTE, bundle_config, export_random_bundle, provenance_checkpoints
from .reference import PAPER_CHUNK, TORCH_VARIANTS
from .report import SCHEMA_VERSION, now
from .worker import Job

PAPER_RTF = 0.082  # per stem: 0.73 s of CPU time for an 8.91 s chunk (paper, §3)
REFERENCE = ("pytorch", "eager-fp32")
# (scope, stems). "chunk": the paper's PAPER_CHUNK-sample mono chunk in memory (chunk × 1 stem is what the paper's
# RTF measures). "track": a stereo track file end to end, decode → separate → write; the runtime separates both
# channels, the reference the mono downmix as the paper did (half the work).
WORKLOADS = (("chunk", 1), ("chunk", 4), ("track", 1), ("track", 4))
RUNTIME_BACKENDS = ("ort", "openvino", "trt")
BACKEND_PRECISIONS = {"openvino": ("fp32", "bf16", "int8")}  # what a backend runs (others: the bundle's stored graphs)
DEFAULTS = ("auto", "auto")  # the row that runs `unmix separate`'s defaults: backend and precision "auto"
PREVIOUS_DEFAULT = ("ort", "fp32/per-channel")  # what `unmix separate` ran before OpenVINO and the mid channel
PEER_WORKLOAD = ("track", 4)
RUN_DEFAULTS = {
    "cpu": {"repeats": 3, "warmup": 1, "track_seconds": 30.0, "track_repeats": 1},
    "cuda": {"repeats": 20, "warmup": 3, "track_seconds": 180.0, "track_repeats": 3},
}
FIDELITY_WORKLOAD = ("chunk", 4)  # whose jobs also capture outputs and codes for the fidelity comparison
WARMUP_SECONDS = 2.0  # the excerpt track rows warm up on: enough for first-run allocations and caches


@dataclass(frozen=True)
class Row:
    """One way of running the separator: a backend and its variant (PyTorch variant or bundle precision)."""

    backend: str
    variant: str

    @property
    def is_reference(self) -> bool:
        return (self.backend, self.variant) == REFERENCE

    def runs(self, workload: tuple[str, int]) -> bool:
        """Peers run the stereo track with all stems only (they separate all four at once)."""
        return self.backend != "peer" or workload == PEER_WORKLOAD

    def label(self, device: str) -> str:
        if self.is_reference:
            return "PyTorch eager fp32 (paper-style reference)"
        if (self.backend, self.variant) == DEFAULTS:
            return "unmix separate defaults (backend and precision auto, stereo mid)"
        if (self.backend, self.variant) == PREVIOUS_DEFAULT:
            return "ONNX Runtime CPU fp32, stereo per-channel (the previous defaults)"
        if self.backend == "peer":
            from .peers import peer_label

            return peer_label(self.variant)
        if self.backend == "openvino":
            return f"OpenVINO CPU {self.variant}"
        if self.backend == "pytorch":
            mode, precision = self.variant.split("-")
            return f"PyTorch {dict(eager='eager', cudagraph='CUDA graph', compile='torch.compile')[mode]} {precision}"
        if self.backend == "ort":
            return f"ONNX Runtime {'CPU' if device == 'cpu' else 'CUDA'} {self.variant}"
        return f"TensorRT {self.variant}"


@dataclass
class RtfSettings:
    device: str = "cpu"
    # "auto", "ort", "openvino", "trt", "pytorch" (the CUDA PyTorch variants), "defaults", "peers"
    backends: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] | None = None  # default: fp32,int8 on CPU; fp32,fp16 on CUDA
    threads: int | None = None
    # None: the device's default (RUN_DEFAULTS); a CPU runs the full-size reference at close to real time per
    # stem, so a full-length track would take it many minutes a run for four stems
    repeats: int | None = None  # timed runs of the chunk workloads
    warmup: int | None = None  # untimed runs before each workload
    track_seconds: float | None = None
    track_repeats: int | None = None
    workloads: tuple[tuple[str, int], ...] = WORKLOADS
    per_stem: str = "vocals"  # the stem the one-stem rows time (every stem has the same architecture and cost)
    seed: int = 0
    fidelity: bool = True

    def __post_init__(self) -> None:
        for name, value in RUN_DEFAULTS["cuda" if self.on_cuda else "cpu"].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def chosen_precisions(self) -> tuple[str, ...]:
        return self.precisions or (("fp32", "fp16") if self.on_cuda else ("fp32", "int8", "bf16"))

    def rows(self) -> list[Row]:
        """The reference first, then the PyTorch CUDA variants (fp16 eager, CUDA graph, torch.compile), the runtime
        backends at each precision they run, `unmix separate`'s defaults, and on CPU the peers (peers.py)."""
        wanted = set(self.backends)
        if "auto" in wanted:
            wanted |= {"ort", "trt", "pytorch"} if self.on_cuda else {"ort", "openvino", "defaults", "peers"}
        rows = [Row(*REFERENCE)]
        if self.on_cuda and "pytorch" in wanted:
            rows += [Row("pytorch", variant) for variant in TORCH_VARIANTS if variant != REFERENCE[1]]
        for backend in RUNTIME_BACKENDS:
            if backend in wanted:
                runs = BACKEND_PRECISIONS.get(backend)
                computed = set(COMPUTED_PRECISIONS)  # run from another precision's graphs, by the backends that can
                rows += (
                    [Row(backend, p) for p in self.chosen_precisions() if p in runs]
                    if runs
                    else [Row(backend, p) for p in self.chosen_precisions() if p not in computed]
                )
        if "defaults" in wanted:
            rows += [Row(*PREVIOUS_DEFAULT)] * (not self.on_cuda) + [Row(*DEFAULTS)]
        if "peers" in wanted and not self.on_cuda:
            from .peers import PEERS

            rows += [Row("peer", name) for name in PEERS]
        return rows


@dataclass
class Measurement:
    """One row × workload: what it ran, how long it took, what it used."""

    label: str
    backend: str
    variant: str
    scope: str
    stems: int
    audio_seconds: float
    status: str = "ok"  # "ok", "unavailable" or "failed"
    message: str = ""
    seconds: list[float] = field(default_factory=list)
    median_s: float | None = None
    rtf: float | None = None  # median wall seconds / audio seconds, after warm-up
    ratio_to_reference: float | None = None  # rtf / the reference's rtf on the same workload (< 1: faster)
    ratio_to_paper: float | None = None  # rtf / (PAPER_RTF × stems)
    cpu_seconds: list[float] = field(default_factory=list)  # the process's CPU time per run, all threads
    median_cpu_s: float | None = None
    cpu_rtf: float | None = None  # median CPU seconds / audio seconds
    cpu_ratio_to_reference: float | None = None  # cpu_rtf / the reference's cpu_rtf on the same workload
    peak_rss_mib: float | None = None
    gpu_peak_mib: float | None = None
    torch_peak_reserved_mib: float | None = None


@dataclass
class BenchAudio:
    """The audio every row works on, written once to the work folder."""

    sample_rate: int
    chunk_file: Path  # mono float32 .npy, PAPER_CHUNK samples
    track_file: Path  # stereo PCM-16 wav
    warmup_file: Path  # its first WARMUP_SECONDS
    chunk_stems: dict[str, np.ndarray]  # the true mono stems of the chunk, for the fidelity SDR
    track_seconds: float
    chunk_seconds: float


def prepare_audio(
    folder: Path, settings: RtfSettings, sample_rate: int, hop: int, chunk: int = PAPER_CHUNK
) -> BenchAudio:
    """The synthetic song (export's parity signal) as the mono chunk, the stereo track and its warm-up excerpt."""
    folder.mkdir(parents=True, exist_ok=True)
    piece = synthetic_audio(sample_rate, hop, segments=1, seconds=(chunk + hop) / sample_rate)
    mono = {name: stems[0].mean(axis=0)[:chunk] for name, stems in piece.stems.items()}
    np.save(folder / "chunk.npy", piece.mixtures[0].mean(axis=0)[:chunk].astype(np.float32))
    track = synthetic_audio(sample_rate, hop, segments=1, seconds=settings.track_seconds).mixtures[0].T
    sf.write(folder / "track.wav", track, sample_rate, subtype="PCM_16")  # as MUSDB's wavs
    sf.write(folder / "warmup.wav", track[: int(WARMUP_SECONDS * sample_rate)], sample_rate, subtype="PCM_16")
    return BenchAudio(
        sample_rate,
        folder / "chunk.npy",
        folder / "track.wav",
        folder / "warmup.wav",
        {name: mono[name] for name in STEMS},
        track.shape[0] / sample_rate,
        chunk / sample_rate,
    )


Progress = Callable[[int], None]


def run_worker(job: Job, folder: Path, name: str, progress: Progress) -> dict:
    """Run one job in a fresh interpreter; its `result` dict (status ok/unavailable/failed).

    A fresh process per job makes its peak RSS its own (see `worker.main` for the other reasons).
    """
    job_file = folder / f"{name}.json"
    job.save(job_file)
    log = folder / f"{name}.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "unmix.bench.worker", str(job_file)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        result = None
        assert process.stdout is not None  # stdout=PIPE above
        for line in process.stdout:
            message = json.loads(line) if line.startswith("{") else {}
            if "tick" in message:
                progress(1)
            result = message.get("result", result)
        process.wait()
    if result is None:
        tail = log.read_text().strip().splitlines()
        result = {
            "status": "failed",
            "message": f"worker exited with {process.returncode}: {tail[-1] if tail else 'no output'}",
        }
    return result


@dataclass
class ModelSource:
    """Where the rows' models come from: the bundle the runtime runs and the PyTorch spec the worker rebuilds."""

    bundle: Path
    torch_spec: dict  # for `models.torch_separators`
    description: str
    weights_match: bool  # whether the PyTorch weights are the bundle's (fidelity is only meaningful then)

    @property
    def stems(self) -> list[str]:
        return read_manifest(self.bundle, verify=False).stems


def measure(
    settings: RtfSettings,
    source: ModelSource,
    audio: BenchAudio,
    folder: Path,
    progress: Progress = lambda n: None,
) -> tuple[list[Measurement], dict[Row, dict]]:
    """Every row × workload, the reference first, with ratios against the reference; and each row's fidelity
    capture (outputs and codes on the chunk, taken by its chunk × all-stems job): {row: worker result}."""
    measurements, captures = [], {}
    # benchmark_rtf sets the threads and RtfSettings.__post_init__ the run counts, before any row runs
    assert settings.threads is not None and settings.warmup is not None
    assert settings.repeats is not None and settings.track_repeats is not None
    (folder / "out").mkdir(exist_ok=True)
    for row in settings.rows():
        unavailable = None  # a row that cannot run here cannot run any workload: spawn no more processes for it
        for scope, count in filter(row.runs, settings.workloads):
            stems = list(source.stems) if count > 1 else [settings.per_stem]
            track = scope == "track"
            name = f"{row.backend}-{row.variant.replace('/', '-')}-{scope}-{count}"
            capture = settings.fidelity and (scope, count) == FIDELITY_WORKLOAD
            job = Job(
                backend=row.backend,
                variant=row.variant,
                device=settings.device,
                scope=scope,
                stems=stems,
                threads=settings.threads,
                sample_rate=audio.sample_rate,
                chunk_file=str(audio.chunk_file),
                track_file=str(audio.track_file),
                warmup_file=str(audio.warmup_file),
                scratch=str(folder / "out"),
                model=source.torch_spec,
                bundle=str(source.bundle),
                warmup=settings.warmup,
                repeats=settings.track_repeats if track else settings.repeats,
                output=str(folder / f"{name}.npz") if capture else None,
            )
            result = unavailable or run_worker(job, folder, name, progress)
            if result["status"] == "unavailable":
                unavailable = result
            seconds = audio.track_seconds if track else audio.chunk_seconds
            entry = Measurement(row.label(settings.device), row.backend, row.variant, scope, len(stems), seconds)
            entry.status, entry.message = result["status"], result.get("message", "")
            if entry.status == "ok":
                entry.seconds, entry.median_s = result["seconds"], result["median_s"]
                entry.rtf = entry.median_s / seconds
                entry.ratio_to_paper = entry.rtf / (PAPER_RTF * len(stems))
                entry.cpu_seconds, entry.median_cpu_s = result["cpu_seconds"], result["median_cpu_s"]
                entry.cpu_rtf = entry.median_cpu_s / seconds
                for key in ("peak_rss_mib", "gpu_peak_mib", "torch_peak_reserved_mib"):
                    setattr(entry, key, result.get(key))
            else:
                progress(job.warmup + job.repeats + capture)  # the ticks this job will never send
            if capture:
                if entry.status == "ok":
                    assert job.output is not None  # a capturing job always has its output path
                    with np.load(job.output) as data:
                        result["arrays"] = {key: data[key] for key in data.files}
                captures[row] = result
            measurements.append(entry)
    reference = {(m.scope, m.stems): m for m in measurements if (m.backend, m.variant) == REFERENCE and m.rtf}
    for entry in measurements:
        if entry.rtf is not None and (entry.scope, entry.stems) in reference:
            same = reference[(entry.scope, entry.stems)]
            # the reference rows were picked by their rtf; an ok row sets its rtf and cpu_rtf together
            assert same.rtf is not None and entry.cpu_rtf is not None
            entry.ratio_to_reference = entry.rtf / same.rtf
            entry.cpu_ratio_to_reference = entry.cpu_rtf / same.cpu_rtf if same.cpu_rtf else None
    return measurements, captures


def progress_total(settings: RtfSettings) -> int:
    total = 0
    # RtfSettings.__post_init__ fills the run counts in
    assert settings.warmup is not None and settings.repeats is not None and settings.track_repeats is not None
    for row in settings.rows():
        workloads = list(filter(row.runs, settings.workloads))
        total += sum(
            settings.warmup + (settings.track_repeats if scope == "track" else settings.repeats)
            for scope, _ in workloads
        )
        total += settings.fidelity and FIDELITY_WORKLOAD in workloads
    return total


def settings_dict(settings: RtfSettings) -> dict:
    data = asdict(settings)
    data["precisions"] = list(settings.chosen_precisions())
    data["workloads"] = [f"{scope}×{count}" for scope, count in settings.workloads]
    return data


def fidelity_rows(settings: RtfSettings, source: ModelSource, audio: BenchAudio, outputs: dict[Row, dict]) -> dict:
    """Each row's outputs against the reference's: the PyTorch reference when its weights are the
    bundle's, otherwise the bundle's own fp32 graph on ONNX Runtime."""
    if source.weights_match:
        against, name = Row(*REFERENCE), "the PyTorch paper-style reference (fp32 eager, same weights)"
        note = "SDR Δ = SDR(candidate) − SDR(reference) against the synthetic song's true stems."
    else:
        against, name = Row("ort", "fp32"), "the bundle's fp32 graph on ONNX Runtime"
        note = "No PyTorch weights for this bundle were given (--separator), so the PyTorch reference (random weights,"
        note += " timed only) is not compared."
    skipped: list[str] = []
    rows: list[dict] = []
    baseline = outputs.get(against, {})
    if baseline.get("status") != "ok":
        skipped.append(
            f"no fidelity figures: the comparison row {against.label(settings.device)} did not run "
            f"({baseline.get('message', 'not in this run')})"
        )
        return {"reference": name, "note": note, "rows": rows, "skipped": skipped}
    for row, result in outputs.items():
        if row == against or (not source.weights_match and row.backend == "pytorch"):
            continue
        if result["status"] != "ok":
            skipped.append(f"{row.label(settings.device)}: {result['status']} — {result.get('message', '')}")
            continue
        for stem, figures in compare_outputs(baseline["arrays"], result["arrays"], audio.chunk_stems).items():
            rows.append(
                {"label": row.label(settings.device), "backend": row.backend, "variant": row.variant, "stem": stem}
                | figures
            )
    return {"reference": name, "note": note, "rows": rows, "skipped": skipped}


def model_source(
    folder: Path, settings: RtfSettings, bundle: Path | None, config_name: str, separators: dict[str, str] | None = None
) -> ModelSource:
    """Where the rows' models come from.

    A given bundle is timed as it is; its PyTorch reference uses `separators` (our phase-2 runs, the
    bundle's own weights) when given or named in the bundle's provenance and still on disk, otherwise
    random weights of the bundle's config (speed does not
    depend on weights; fidelity then compares against the bundle's fp32 graph instead). Without a bundle,
    one is exported here from random weights of the named config, the reference using the same weights.
    """
    if bundle is not None:
        separators = separators or provenance_checkpoints(bundle)
        if separators:
            return ModelSource(
                bundle, {"separators": separators}, f"bundle {bundle}; PyTorch reference from {separators}", True
            )
        config = bundle_config(bundle)
        spec = {"config": config.to_dict(), "seed": settings.seed}
        return ModelSource(bundle, spec, f"bundle {bundle}; PyTorch reference with random weights of its config", False)
    config = resolve_config(config_name)
    out = export_random_bundle(config, folder / "bundle", settings.chosen_precisions(), settings.seed, config_name)
    precisions = ", ".join(read_manifest(out).precisions)
    description = f"'{config_name}' config exported here to ONNX ({precisions}), {RANDOM_WEIGHTS_NOTE}"
    return ModelSource(out, {"config": config.to_dict(), "seed": settings.seed}, description, weights_match=True)


def benchmark_rtf(
    settings: RtfSettings,
    *,
    bundle: Path | None = None,
    config_name: str = "paper",
    separators: dict[str, str] | None = None,
    command: str = "",
    progress: bool = True,
) -> dict:
    """Run every row × workload (with the fidelity capture) and return the report (`report.SCHEMA_VERSION`)."""
    from tqdm import tqdm

    settings.threads = settings.threads or usable_cores()
    created, load_at_start, revision_at_start = now(), load_average(), git_revision()
    folder = Path(tempfile.mkdtemp(prefix="unmix-bench-"))
    say = (lambda message: print(message, file=sys.stderr, flush=True)) if progress else (lambda message: None)
    try:
        if bundle is None:
            say(
                f"exporting the '{config_name}' config with random weights ({', '.join(settings.chosen_precisions())})…"
            )
        source = model_source(folder, settings, bundle, config_name, separators)
        if settings.per_stem not in source.stems:
            raise ValueError(f"--per-stem {settings.per_stem!r} is not one of the bundle's stems {source.stems}")
        manifest = read_manifest(source.bundle, verify=False)
        audio = prepare_audio(folder / "audio", settings, manifest.sample_rate, manifest.hop_length)
        rows, workloads = len(settings.rows()), len(settings.workloads)
        say(f"timing {rows} rows × {workloads} workloads, each in a fresh process…")
        with tqdm(total=progress_total(settings), disable=not progress, unit="run", desc="unmix-bench") as bar:
            measurements, captures = measure(settings, source, audio, folder, bar.update)
        fidelity = (
            fidelity_rows(settings, source, audio, captures)
            if captures
            else {
                "reference": "—",
                "note": "no fidelity capture (--no-fidelity, or no chunk workload)",
                "rows": [],
                "skipped": [],
            }
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    config_label = config_name if bundle is None else "bundle"
    return {
        "schema": "unmix-bench/rtf",
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "command": command,
        "machine": machine_info(settings.threads, load_at_start, revision_at_start),
        "settings": settings_dict(settings),
        "model": {
            "description": source.description,
            "config_name": config_label,
            "bundle": str(bundle) if bundle else None,
        },
        "audio": {
            "chunk_samples": PAPER_CHUNK,
            "chunk_seconds": audio.chunk_seconds,
            "track_seconds": audio.track_seconds,
            "sample_rate": audio.sample_rate,
            "description": "a synthetic song (export's parity signal; speed does not depend on content)",
        },
        "paper_rtf_per_stem": PAPER_RTF,
        "measurements": [asdict(m) for m in measurements],
        "fidelity": fidelity,
        "notes": rtf_notes(settings),
    }


def rtf_notes(settings: RtfSettings) -> list[str]:
    notes = [
        "Reference: the paper's predict_channel.py path re-implemented with this package's model: per stem, "
        "the mono mixture (channel mean, as librosa.load(mono=True)), non-overlapping 393216-sample chunks, batch 1, "
        "fp32 eager PyTorch, outputs zero-padded per chunk. Unlike the paper's code it does not compute the training "
        "losses it then discards, so it is if anything faster than the paper's script.",
        "On the track the reference separates the mono downmix (as the paper did) while the runtime separates both "
        "stereo channels, twice the audio: the × ref column is conservative for the runtime.",
        "The paper's 0.082 is 0.73 s of CPU time per 8.91 s chunk per stem on an unnamed CPU; × paper compares "
        "against 0.082 × the number of stems.",
        "Runtime rows run unmix.runtime.Separator as users do (exact overlap-save chunking with receptive-field "
        "context, channels as batch items, ONNX Runtime thread spinning off).",
    ]
    if settings.on_cuda:
        notes.append(
            "CUDA PyTorch variants follow the paper-style path; fp16 runs ME and SD in half precision with the "
            "nearest-code search in fp32; the CUDA-graph and torch.compile variants zero-pad the last chunk to "
            "a full chunk (static shapes)."
        )
    return notes
