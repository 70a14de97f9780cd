"""`unmix`: the command line over `unmix.runtime` (separate, stream, doctor).

Exit status: 0 when every input was separated (or skipped), 1 when some failed, 2 for a usage or setup
error (bad bundle, unavailable device), 130 after Ctrl-C, 143 after SIGTERM (both remove the track in progress).
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import typer
from tqdm import tqdm

from .audio import OUTPUT_FORMATS, open_audio
from .errors import Cancelled, OutputError, UnmixError, _interrupted_while_starting
from .files import DEFAULT_FILENAME, check_template, find_inputs, plan_outputs
from .manifest import BundleError, read_manifest
from .separator import Separator, choose_stems, resolve_bundle

app = typer.Typer(
    help="Separate music into stems (drums, bass, other, vocals) with unmix's VQ-VAE models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that `kill` unwinds a run as Ctrl-C does."""


def _raise_terminated(number: int, frame: object) -> None:
    raise _Terminated


def _stop_cleanly_on_sigterm() -> None:
    """Let SIGTERM (`kill`, service managers, CI timeouts) remove the temporaries and exit 143, as Ctrl-C exits 130.

    SIGINT keeps Python's own handling, which leaves it ignored where the parent ignored it (a background job of
    a script): such a run is stopped with `kill`. Only the main thread may set handlers.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:  # from here on, Ctrl-C unwinds the run
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _stopped(stop: KeyboardInterrupt, what: str) -> typer.Exit:
    """Say what a stop left (`interrupted: …` after Ctrl-C, `terminated: …` after SIGTERM); exit 130 or 143."""
    terminated = isinstance(stop, _Terminated)
    typer.echo(f"{'terminated' if terminated else 'interrupted'}: {what}", err=True)
    return typer.Exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def separate(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders (searched recursively) or glob patterns."),
    output: Path = typer.Option(Path("separated"), "-o", "--output", help="Folder for the stems."),
    stems: str | None = typer.Option(None, help="Stems to compute, comma-separated (default: all), e.g. vocals,bass."),
    format: str | None = typer.Option(None, "--format", help="wav, flac, ogg or mp3 (default: the input's format)."),
    filename: str = typer.Option(
        DEFAULT_FILENAME, help="Output path under -o; fields {track}, {trackext}, {stem}, {ext}."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    backend: str = typer.Option(
        "auto",
        help="auto (OpenVINO on a CPU where it is installed, else ONNX Runtime), ort, openvino or trt (TensorRT, untested).",
    ),
    threads: int | None = typer.Option(None, help="CPU threads (default: the physical cores)."),
    chunk: int | None = typer.Option(
        None,
        help="Samples per chunk at the model's rate, a multiple of 8 (default 5 s on OpenVINO, 2.5 s there in int8, 20 s elsewhere).",
    ),
    precision: str = typer.Option(
        "auto",
        help="auto (on OpenVINO: bf16 where the CPU computes it natively, else the bundle's int8 where it passed the "
        "export's gate; else fp32), fp32, bf16 (openvino), or the bundle's int8 / fp16.",
    ),
    bundle: str = typer.Option("default", help="Bundle folder (default: the model shipped with unmix)."),
    refine: bool | None = typer.Option(
        None,
        "--refine/--no-refine",
        help="Filter the mixture with the stems' estimates (default: on for four-stem bundles; "
        "--no-refine gives the paper's raw decoder output and runs only the stems asked for).",
    ),
    stereo: str | None = typer.Option(
        None,
        help="How stereo is separated: mid (once, on (L+R)/2; the refinement places each stem; the default "
        "with refinement) or per-channel (the default without).",
    ),
    stateful: bool | None = typer.Option(
        None,
        "--stateful/--stages",
        help="openvino: run the graphs as stateful models, each sample once (the default in fp32), or in stages "
        "that recompute their context (the default in bf16).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo tracks whose stems already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Separate audio files into one file per stem."""
    try:
        _stop_cleanly_on_sigterm()
        check_template(filename)
        if format is not None and format.lower() not in OUTPUT_FORMATS:
            raise OutputError(f"unknown --format {format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        separator = Separator.from_bundle(
            bundle,
            device=device,
            backend=backend,
            threads=threads,
            stems=[s.strip() for s in stems.split(",") if s.strip()] if stems else None,
            chunk=chunk,
            precision=precision,
            refine=refine,
            stereo=stereo,
            stateful=stateful,
            spinning=True,  # a command-line run owns the machine
        )
    except (UnmixError, BundleError, ValueError) as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt as stop:
        raise _stopped(stop, "stopped while loading the model; nothing was written") from None
    if not quiet:
        typer.echo(f"unmix: {', '.join(separator.stems)} with {separator.description}", err=True)

    tally = _Tally()
    try:
        planned, refused = plan_outputs(find_inputs(inputs, exclude=output), output, filename, format, separator.stems)
        for problem in refused:  # before any work: nothing of the batch is written yet
            typer.echo(f"error: {problem}", err=True)
        tally.failed += len(refused)
        for path in planned:
            _separate_track(separator, path, output, filename, format, overwrite, quiet, tally)
    except KeyboardInterrupt as stop:
        raise _stopped(stop, "the track in progress was not written (finished tracks are kept)") from None
    typer.echo(tally.summary())
    if tally.failed:
        raise typer.Exit(1)


@app.command()
def batch(
    inputs: list[str] = typer.Argument(
        ..., help="Audio files, folders, glob patterns, or URIs fsspec reads (s3://…, gs://…, file://…)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the stems (shared by every node)."),
    ray_address: str | None = typer.Option(
        None, "--ray", help="A Ray cluster's address (default: a local Ray instance on this machine)."
    ),
    workers: int | None = typer.Option(None, min=1, help="Workers (default: the cluster's CPUs over --threads)."),
    threads: int | None = typer.Option(
        None, min=1, help="CPU threads per worker (default: all of a node's: one worker per node)."
    ),
    ledger: Path | None = typer.Option(None, help="The JSON-lines ledger (default: <output>/unmix-batch.jsonl)."),
    stems: str | None = typer.Option(None, help="Stems to compute, comma-separated (default: all), e.g. vocals,bass."),
    format: str | None = typer.Option(None, "--format", help="wav, flac, ogg or mp3 (default: the input's format)."),
    filename: str = typer.Option(
        DEFAULT_FILENAME, help="Output path under -o; fields {track}, {trackext}, {stem}, {ext}."
    ),
    device: str = typer.Option("cpu", help="cpu, or cuda (one GPU per worker)."),
    backend: str = typer.Option("auto", help="As for unmix separate."),
    chunk: int | None = typer.Option(None, help="As for unmix separate."),
    precision: str = typer.Option("auto", help="As for unmix separate."),
    bundle: str = typer.Option("default", help="Bundle folder (default: the model shipped with unmix)."),
    refine: bool | None = typer.Option(None, "--refine/--no-refine", help="As for unmix separate."),
    stereo: str | None = typer.Option(None, help="As for unmix separate."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo tracks whose stems already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Separate a catalog on a Ray cluster, as unmix separate would, resumably; one ledger, one summary.

    Tracks whose stems exist are skipped, so rerunning a stopped job finishes the rest. Needs unmix[ray].
    """
    from .batch import OutputOptions, SeparatorOptions, list_tracks, run_batch

    try:
        _stop_cleanly_on_sigterm()
        check_template(filename)
        if format is not None and format.lower() not in OUTPUT_FORMATS:
            raise OutputError(f"unknown --format {format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        chosen = [s.strip() for s in stems.split(",") if s.strip()] if stems else None
        options = SeparatorOptions(
            bundle=bundle,
            device=device,
            backend=backend,
            threads=threads,
            stems=tuple(chosen) if chosen else None,
            chunk=chunk,
            precision=precision,
            refine=refine,
            stereo=stereo,
        )
        written = choose_stems(read_manifest(resolve_bundle(bundle), verify=False), chosen)
        destination = OutputOptions(str(output), filename, format.lower() if format else None, overwrite)
        tracks, refused = list_tracks(inputs, destination, written)
    except (UnmixError, BundleError, ValueError) as error:
        raise _fail(str(error)) from None
    for problem in refused:
        typer.echo(f"error: {problem}", err=True)
    bar = tqdm(total=len(tracks), unit="track", disable=quiet, file=sys.stderr, dynamic_ncols=True)

    def on_row(row: dict) -> None:
        bar.update(1)
        if row["status"] == "failed":
            bar.write(f"error: {row['error']}", file=sys.stderr)

    try:
        summary = run_batch(
            tracks,
            options,
            destination,
            written,
            workers=workers,
            threads=threads,
            gpus=1.0 if device.startswith("cuda") else 0.0,
            address=ray_address,
            ledger=ledger,
            on_row=on_row,
            refused=refused,
        )
    except UnmixError as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt as stop:
        raise _stopped(stop, "tracks in progress were not written (finished ones are kept; rerun to finish)") from None
    finally:
        bar.close()
    typer.echo(summary.line())
    if summary.failed:
        raise typer.Exit(1)


@dataclass
class _Tally:
    """What a batch of tracks came to."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    elapsed: float = 0.0

    def summary(self) -> str:
        summary = f"{self.done} separated"
        if self.done:
            rtf = self.elapsed / self.audio_seconds
            summary += f": {_duration(self.audio_seconds)} of audio in {self.elapsed:.1f} s, RTF {rtf:.3f}"
        return summary + f"; {self.skipped} skipped; {self.failed} failed"


def _separate_track(
    separator: Separator,
    path: Path,
    output: Path,
    filename: str,
    format: str | None,
    overwrite: bool,
    quiet: bool,
    tally: _Tally,
) -> None:
    """Separate one planned track into `output`, say what happened in one line and count it in `tally`; a failure
    is reported and counted, never raised (one bad file does not stop the batch)."""
    bar = _ProgressBar(path.name, disable=quiet, rate=_sample_rate(path))
    try:
        result = separator.separate_file(
            path, output, filename=filename, format=format, overwrite=overwrite, progress=bar.update
        )
    except (UnmixError, BundleError, Cancelled) as error:
        result, problem = None, str(error)
    except Exception as error:  # a backend failure on one file must not stop the batch
        result, problem = None, f"{path}: {type(error).__name__}: {(str(error) or '?').splitlines()[0]}"
    finally:
        bar.close()
    if result is None:
        typer.echo(f"error: {problem}", err=True)
        tally.failed += 1
        return
    folder = _common_folder(list(result.outputs.values()))
    if result.skipped:
        tally.skipped += 1
        typer.echo(f"skipped {path}: stems exist in {folder} (--overwrite to redo)")
        return
    assert result.seconds is not None  # separated: read to its end, so its length is known
    tally.done += 1
    tally.audio_seconds += result.seconds
    tally.elapsed += result.elapsed
    typer.echo(f"{path} → {folder} ({_duration(result.seconds)} in {result.elapsed:.1f} s, RTF {result.rtf:.3f})")


@app.command()
def stream(
    source: str = typer.Argument(
        "-", help="Raw float32 little-endian interleaved samples: - for stdin, or a file or FIFO."
    ),
    output: Path = typer.Option(Path("separated"), "-o", "--output", help="Folder for the stems (<stem>.<format>)."),
    rate: int = typer.Option(44100, "--rate", help="The input's sample rate in Hz."),
    channels: int = typer.Option(2, "--channels", help="The input's channel count."),
    block: float = typer.Option(0.5, help="Seconds of input read per step."),
    format: str = typer.Option("wav", "--format", help="wav (float) or flac (24 bit)."),
    backend: str = typer.Option(
        "auto", help="auto, ort or openvino (low latency needs openvino; ort runs whole windows)."
    ),
    threads: int | None = typer.Option(None, help="CPU threads (default: the physical cores)."),
    precision: str = typer.Option(
        "auto", help="auto (bf16 where OpenVINO computes it natively, else fp32), fp32, int8 or bf16 (openvino)."
    ),
    bundle: str = typer.Option("default", help="Bundle folder (default: the model shipped with unmix)."),
    refine: bool | None = typer.Option(
        None, "--refine/--no-refine", help="Refinement (default: on for four-stem bundles)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No running report."),
) -> None:
    """Separate a live stream of raw samples, writing each stem's samples as they become final.

    e.g. ffmpeg -i song.mp3 -f f32le -ac 2 -ar 44100 - | unmix stream -o stems
    """
    from .live import separate_live

    try:
        _stop_cleanly_on_sigterm()
        separator = Separator.from_bundle(bundle, backend=backend, threads=threads, precision=precision, refine=refine)
    except (UnmixError, ValueError) as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt as stop:
        raise _stopped(stop, "stopped while loading the model; nothing was written") from None

    def report(seconds_in: float, seconds_out: float) -> None:
        if not quiet:
            typer.echo(f"\rin {seconds_in:7.1f} s  out {seconds_out:7.1f} s", err=True, nl=False)

    try:
        with sys.stdin.buffer if source == "-" else open(source, "rb") as handle:
            result = separate_live(
                separator,
                handle,
                output,
                sample_rate=rate,
                channels=channels,
                block_seconds=block,
                format=format,
                on_block=report,
            )
    except OSError as error:
        raise _fail(f"{source}: {error.strerror or error}", 1) from None
    except UnmixError as error:
        typer.echo("", err=True)
        raise _fail(str(error), 1) from None
    except KeyboardInterrupt as stop:
        typer.echo("", err=True)
        raise _stopped(stop, "no stem was written") from None
    typer.echo("" if quiet else "\n", err=True, nl=False)
    typer.echo(
        f"{_duration(result.seconds)} streamed into {_common_folder(list(result.outputs.values()))}: stems trail the "
        f"input by at most {result.model_latency:.2f} s (here {result.lag:.2f} s); from arrival to write: median "
        f"{result.wall_latency_median:.2f} s, max {result.wall_latency_max:.2f} s (RTF {result.elapsed / max(result.seconds, 1e-9):.3f})"
    )


@app.command()
def doctor() -> None:
    """Report versions, execution providers, CPU features, GPU and TensorRT, and what to install."""
    from .doctor import report

    typer.echo(report())


class _ProgressBar:
    """A tqdm bar fed by the separator's (done, total) frame callback; a counter of seconds done where the total
    is unknown (a streamed FLAC), `rate` being the input's sample rate."""

    def __init__(self, name: str, disable: bool, rate: int | None = None):
        self.name, self.disable, self.rate = name, disable, rate
        self.bar: tqdm | None = None

    def update(self, done: int, total: int) -> None:
        if self.disable or (not total and not self.rate):
            return
        if self.bar is None:
            if total:
                self.bar = tqdm(
                    total=total,
                    desc=self.name,
                    leave=False,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
                )
            else:
                assert self.rate is not None  # no total: the check above returned unless there is a rate
                self.bar = tqdm(
                    desc=self.name,
                    leave=False,
                    file=sys.stderr,
                    unit="s",
                    unit_scale=1 / self.rate,
                    bar_format="{desc} {n:.1f} s of audio | {elapsed}",
                )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _sample_rate(path: Path) -> int | None:
    """The file's sample rate, or None where it cannot be read (separating it will say why)."""
    try:
        handle, info = open_audio(path)
    except UnmixError:
        return None
    with handle:
        return info.sample_rate


def _common_folder(paths: list[Path]) -> Path:
    folders = {path.parent for path in paths}
    return folders.pop() if len(folders) == 1 else paths[0].parent.parent


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes)}:{seconds:04.1f}"


if __name__ == "__main__":
    app()
