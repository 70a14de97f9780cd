"""`unmix-bench`: real-time factor (default command) and separation quality (`unmix-bench sdr`)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

from .report import SCHEMA_VERSION, default_results_folder, run_name, write_outputs

app = typer.Typer(add_completion=False, help=__doc__, invoke_without_command=True, pretty_exceptions_enable=False)


def fail(message: str) -> None:
    """Print a one-line error and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def split_list(text: str | None) -> tuple[str, ...] | None:
    return tuple(item.strip() for item in text.split(",") if item.strip()) if text else None


def command_line() -> str:
    return shlex.join(["unmix-bench", *sys.argv[1:]])


def output_path(json_path: Path | None, kind: str, created: str, *parts: str) -> Path:
    return json_path or default_results_folder() / f"{run_name(kind, created, *parts)}.json"


def announce(paths: dict[str, Path]) -> None:
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.callback()
def rtf(
    ctx: typer.Context,
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    backend: str = typer.Option(
        "auto",
        help="comma list of ort, openvino, trt, pytorch (the CUDA PyTorch variants), defaults (unmix separate's), "
        "peers (HT-Demucs, Open-Unmix: pip install 'unmix[peers]'); auto = all for the device",
    ),
    precision: str = typer.Option(
        None, help="comma list of fp32, int8, fp16, bf16 (openvino) (default fp32,int8,bf16 on CPU, fp32,fp16 on CUDA)"
    ),
    threads: int = typer.Option(None, help="CPU threads for every row (default: the usable cores)"),
    bundle: Path = typer.Option(
        None, help="a trained bundle to time (default: export one from random weights of --config)"
    ),
    config: str = typer.Option("paper", help="without --bundle: paper, tiny or a config JSON file"),
    separator: list[str] = typer.Option(
        None,
        help="with --bundle: its PyTorch weights, for the reference and fidelity: our phase-2 run or checkpoint "
        "(stem=PATH per stem, a PATH with {stem}, or one PATH); default: the checkpoints the bundle's provenance "
        "names, if still there",
    ),
    repeats: int = typer.Option(None, min=1, help="timed runs per chunk workload, median reported (cpu 3, cuda 20)"),
    track_repeats: int = typer.Option(None, min=1, help="timed runs per track workload (cpu 1, cuda 3)"),
    warmup: int = typer.Option(None, min=0, help="untimed warm-up runs before each workload (cpu 1, cuda 3)"),
    track_seconds: float = typer.Option(None, min=1.0, help="length of the stereo track in seconds (cpu 30, cuda 180)"),
    workloads: str = typer.Option("chunk,track", help="comma list of chunk, track"),
    per_stem: str = typer.Option("vocals", help="the stem the one-stem rows time"),
    fidelity: bool = typer.Option(True, help="compare every backend's outputs and codes with the reference"),
    json_path: Path = typer.Option(
        None, "--json", help="report path (.json; .md and .png beside it); default bench/results/"
    ),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Real-time factor of every backend beside the paper-style PyTorch reference (run: unmix-bench --device cpu)."""
    if ctx.invoked_subcommand is not None:
        return
    from .rtf import RtfSettings, benchmark_rtf
    from .rtf_report import rtf_figure, rtf_markdown

    scopes = split_list(workloads) or ()
    if not set(scopes) <= {"chunk", "track"} or not scopes:
        fail(f"--workloads takes chunk and/or track, got {workloads!r}")
    if bundle is not None and not (bundle / "manifest.json").is_file():
        fail(f"{bundle}: not a bundle folder (no manifest.json)")
    if separator and bundle is None:
        fail("--separator gives a trained bundle's PyTorch weights: use it with --bundle")
    settings = RtfSettings(
        device=device,
        backends=split_list(backend) or ("auto",),
        precisions=split_list(precision),
        threads=threads,
        repeats=repeats,
        warmup=warmup,
        track_seconds=track_seconds,
        track_repeats=track_repeats,
        workloads=tuple((scope, count) for scope in scopes for count in (1, 4)),
        per_stem=per_stem,
        fidelity=fidelity,
    )
    unknown = set(settings.backends) - {"auto", "ort", "openvino", "trt", "pytorch", "defaults", "peers"}
    if unknown or not set(settings.chosen_precisions()) <= {"fp32", "int8", "fp16", "bf16"}:
        fail(f"unknown backend or precision: --backend {backend!r} --precision {precision!r}")
    try:
        from unmix.export.sources import paths_per_stem
        from unmix.runtime.manifest import STEMS

        weights = {s: str(p) for s, p in paths_per_stem(separator, STEMS, "--separator").items()} if separator else None
        report = benchmark_rtf(
            settings, bundle=bundle, config_name=config, separators=weights, command=command_line(), progress=progress
        )
    except (ValueError, OSError, RuntimeError) as error:  # bundle, config, export and I/O errors
        fail(str(error).splitlines()[0])
    path = output_path(json_path, "rtf", report["created"], device.replace(":", ""), report["model"]["config_name"])
    announce(write_outputs(report, rtf_markdown(report), rtf_figure(report), path))


@app.command()
def sdr(
    data: Path = typer.Option(
        ..., help="MUSDB18-HQ-layout root: DATA/<subset>/<song>/{mixture,drums,bass,other,vocals}.wav"
    ),
    subset: str = typer.Option("test", help="the split folder to score"),
    bundle: str = typer.Option(
        "default", help="the bundle to score: a folder, 'default' (the one shipped) or 'none' (baselines only)"
    ),
    precision: str = typer.Option(
        None,
        help="comma list of precisions: the bundle's, or bf16 on openvino (default fp32,int8 on CPU, fp32,fp16 on CUDA)",
    ),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    backend: str = typer.Option("auto", help="auto, ort, openvino or trt"),
    stereo: str = typer.Option(
        "mid", help="how the refined rows separate stereo: mid (as unmix separate) or per-channel"
    ),
    threads: int = typer.Option(None, help="CPU threads (default: the usable cores)"),
    separator: list[str] = typer.Option(
        None,
        help="the model's PyTorch weights, for the PyTorch row and fidelity: our phase-2 run or checkpoint "
        "(stem=PATH per stem, a PATH with {stem}, or one PATH); default: the checkpoints the bundle's provenance "
        "names, if still there",
    ),
    checkpoint: list[str] = typer.Option(
        None, help="phase-1 VQ-VAE checkpoints for the ceiling (SE → SD on the true stem); same forms"
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="allow full unpickling of foreign checkpoints (can run code)"
    ),
    songs: int = typer.Option(None, min=1, help="score only the first N songs"),
    max_seconds: float = typer.Option(None, min=0.1, help="score only the first S seconds of each song"),
    museval: bool = typer.Option(False, "--museval", help="also BSSEval v4 SDR through museval (extra 'eval'; slow)"),
    paper_style: bool = typer.Option(
        False,
        "--paper-style",
        help="also the PyTorch model in the paper's non-overlapping chunks (needs the PyTorch model)",
    ),
    baselines: bool = typer.Option(True, help="score ScaledMixture and the IRM oracle"),
    stems: str = typer.Option(None, help="comma list of the stems to score (default: the bundle's, or all four)"),
    provenance_pytorch: bool = typer.Option(
        True, help="without --separator, run the PyTorch model from the checkpoints the bundle's provenance names"
    ),
    json_path: Path = typer.Option(
        None, "--json", help="report path (.json; .md and .png beside it); default bench/results/"
    ),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Separation quality (the paper's SDR) beside ScaledMixture, the IRM oracle and the VQ-VAE ceiling."""
    from unmix.export.checks import ExportError
    from unmix.runtime import UnmixError
    from unmix.train.data import CorpusError

    from .sdr import SdrSettings, evaluate_sdr
    from .sdr_report import sdr_figure, sdr_markdown

    settings = SdrSettings(
        data=data,
        subset=subset,
        bundle=None if bundle == "none" else bundle,
        precisions=split_list(precision),
        device=device,
        backend=backend,
        stereo=stereo,
        threads=threads,
        separator=tuple(separator or ()),
        checkpoint=tuple(checkpoint or ()),
        trust_pickle=trust_pickle,
        songs=songs,
        max_seconds=max_seconds,
        museval=museval,
        paper_style=paper_style,
        baselines=baselines,
        stems=split_list(stems),
        provenance_pytorch=provenance_pytorch,
    )
    try:
        report = evaluate_sdr(settings, command=command_line(), progress=progress)
    except (CorpusError, ExportError, UnmixError, ValueError, OSError) as error:
        fail(str(error).splitlines()[0])
    path = output_path(json_path, "sdr", report["created"], Path(str(data).rstrip("/")).name, settings.subset)
    write_outputs(report, sdr_markdown(report), None, path)  # the scores first: an hour's run survives a plot error
    announce(write_outputs(report, sdr_markdown(report), sdr_figure(report), path))


@app.command()
def compare(
    reports: list[str] = typer.Argument(..., help="unmix-bench sdr reports (.json), as LABEL=PATH or PATH"),
    out: Path = typer.Option(..., "--out", "-o", help="the markdown table to write"),
    title: str = typer.Option("SDR comparison", help="the table's heading"),
) -> None:
    """One markdown SDR table of several `unmix-bench sdr` reports' model rows, beside the baselines."""
    from unmix.runtime.atomic import write_atomically

    from .sdr_report import comparison_markdown

    loaded = {}
    for spec in reports:
        label, _, path = spec.rpartition("=")
        loaded[label or Path(path).stem] = read_report(Path(path), ("unmix-bench/sdr",))
    write_atomically(out, comparison_markdown(loaded, title))
    announce({"markdown": out})


@app.command()
def stream(
    track: Path = typer.Option(None, help="a stereo audio file (default: a synthetic 60 s track)"),
    seconds: float = typer.Option(60.0, help="without --track: the synthetic track's length"),
    block: float = typer.Option(0.5, help="seconds of input per block fed to `unmix stream`"),
    bundle: str = typer.Option("default", help="the bundle both commands separate with"),
    json_path: Path = typer.Option(None, "--json", help="report path (default: bench/results/stream-cpu-<date>.json)"),
) -> None:
    """Latency, compute and peak memory of `unmix stream` beside `unmix separate` (one process per row)."""
    import tempfile

    from .machine import cpu_model, load_average
    from .report import now
    from .streaming import markdown, measure, synthetic_track, to_json

    created = now()
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="unmix-bench-") as scratch:
        source = track or synthetic_track(Path(scratch) / "synthetic.wav", seconds)
        if not source.is_file():
            fail(f"{source}: no such file")
        length = sf_seconds(source)
        try:
            rows = measure(source, bundle=bundle, block=block)
        except RuntimeError as error:
            fail(str(error))
    machine = f"{cpu_model()}, {os.cpu_count()} logical cores, load {load}"
    label = str(track or f"synthetic {seconds:g} s")  # a str of its own: the report dict's values are mixed types
    report = {
        "schema": SCHEMA_VERSION,
        "kind": "stream",
        "created": created,
        "command": command_line(),
        "track": label,
        "seconds": length,
        "block_s": block,
        "machine": machine,
        "rows": to_json(rows),
    }
    text = markdown(rows, track=label, seconds=length, machine=machine, command=command_line(), date=created)
    announce(write_outputs(report, text, None, output_path(json_path, "stream", created, "cpu")))


@app.command()
def batch(
    data: Path = typer.Option(Path("data/synth"), help="a MUSDB18-HQ-layout folder: SUBSET/<song>/mixture.wav"),
    subset: str = typer.Option("test", help="its subset"),
    tracks: int = typer.Option(8, min=1, help="how many of its songs"),
    layout: list[str] = typer.Option(["1x2", "2x1"], help="WORKERSxTHREADS of an unmix batch row (repeatable)"),
    bundle: str = typer.Option("default", help="the bundle every command separates with"),
    json_path: Path = typer.Option(None, "--json", help="report path (default: bench/results/batch-cpu-<date>.json)"),
) -> None:
    """Throughput of `unmix batch` (local Ray) beside `unmix separate` on the same tracks (one process per row)."""
    import tempfile

    from unmix.train.data import CorpusError

    from .batch import corpus_tracks, markdown, measure, to_json
    from .machine import cpu_model, load_average
    from .report import now

    created = now()
    load = load_average()
    try:
        layouts = [(int(w), int(t)) for w, t in (item.lower().split("x") for item in layout)]
    except ValueError:
        fail(f"--layout takes WORKERSxTHREADS, e.g. 2x1; got {layout}")
    with tempfile.TemporaryDirectory(prefix="unmix-bench-") as scratch:
        try:
            found = corpus_tracks(data, subset, tracks, Path(scratch) / "tracks")
            rows = measure(found, bundle=bundle, layouts=layouts)
        except (CorpusError, RuntimeError) as error:
            fail(str(error))
    machine = f"{cpu_model()}, {os.cpu_count()} logical cores, load {load}"
    report = {
        "schema": SCHEMA_VERSION,
        "kind": "batch",
        "created": created,
        "command": command_line(),
        "corpus": str(data / subset),
        "tracks": len(found),
        "machine": machine,
        "rows": to_json(rows),
    }
    text = markdown(rows, tracks=len(found), machine=machine, command=command_line(), date=created)
    announce(write_outputs(report, text, None, output_path(json_path, "batch", created, "cpu")))


def sf_seconds(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


@app.command()
def render(report_json: Path = typer.Argument(..., help="a report written by unmix-bench (.json)")) -> None:
    """Re-render a report's markdown table and PNG plot from its JSON (beside it)."""
    from .rtf_report import rtf_figure, rtf_markdown
    from .sdr_report import sdr_figure, sdr_markdown

    renderers = {"unmix-bench/rtf": (rtf_markdown, rtf_figure), "unmix-bench/sdr": (sdr_markdown, sdr_figure)}
    report = read_report(report_json, tuple(renderers))
    markdown, figure = renderers[report["schema"]]
    announce(write_outputs(report, markdown(report), figure(report), report_json))


def read_report(path: Path, schemas: tuple[str, ...]) -> dict:
    """A report written by unmix-bench with one of `schemas` at this schema version, or a one-line failure."""
    import json

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        fail(f"{path}: cannot read a JSON report: {error}")
    schema = report.get("schema") if isinstance(report, dict) else None
    if schema not in schemas:
        fail(f"{path}: not an unmix-bench report of {' or '.join(schemas)} (schema {schema!r})")
    if report.get("schema_version") != SCHEMA_VERSION:
        fail(f"{path}: schema version {report.get('schema_version')!r}; this unmix-bench reads {SCHEMA_VERSION}")
    return report
