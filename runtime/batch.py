"""Separating a catalog on a Ray cluster (`unmix batch`): the same separation as `unmix separate`, on many workers.

Tracks are planned as `unmix separate` plans them and separated by Ray actors, one track at a time each; a rerun
skips finished tracks, a track whose worker dies is retried, and every result goes to a JSON-lines ledger. Inputs
may also be fsspec URIs (s3://, gs://, ...). Ray is an optional extra, imported only here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from glob import escape as glob_escape
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import AudioError, UnmixError, UsageError
from .files import FileResult, find_inputs, output_paths, plan_outputs, separate_file

LEDGER_FILE = "unmix-batch.jsonl"
MAX_ATTEMPTS = 3  # a track whose worker dies this many times is recorded as failed


@dataclass(frozen=True)
class SeparatorOptions:
    """What each worker passes to `Separator.from_bundle` (see there)."""

    bundle: str = "default"
    device: str = "cpu"
    backend: str = "auto"
    threads: int | None = None
    stems: tuple[str, ...] | None = None
    chunk: int | None = None
    precision: str = "auto"
    refine: bool | None = None
    stereo: str | None = None


@dataclass(frozen=True)
class OutputOptions:
    """Where and how each track's stems are written (see `files.separate_file`)."""

    output: str
    filename: str
    format: str | None = None
    overwrite: bool = False


@dataclass
class BatchSummary:
    """What a job came to: counts, audio seconds separated, wall time, and the ledger it appended to."""

    ledger: Path
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        hours = self.audio_seconds / 3600
        rate = hours / (self.wall_seconds / 3600) if self.wall_seconds > 0 else 0.0
        tracks = self.done + self.skipped + self.failed
        return (
            f"{tracks} tracks: {self.done} separated, {self.skipped} skipped, {self.failed} failed; "
            f"{hours:.3f} h of audio in {self.wall_seconds:.1f} s ({rate:.1f} audio hours per hour); "
            f"ledger {self.ledger}"
        )


def is_uri(text: str) -> bool:
    """Whether `text` names a file through a filesystem scheme (s3://…, file://…) rather than a local path."""
    return "://" in text


def list_tracks(inputs: Sequence[str], options: OutputOptions, stems: Sequence[str]) -> tuple[list[str], list[str]]:
    """The tracks to separate (local paths and URIs, in order) and one-line problems of those refused, planned as
    `unmix separate` plans a batch: unreadable inputs, outputs that would overwrite an input, and tracks whose
    stems would go where an earlier track's go are refused before anything runs."""
    local = [text for text in inputs if not is_uri(text)]
    output = Path(options.output)
    planned, refused = plan_outputs(find_inputs(local, exclude=output), output, options.filename, options.format, stems)
    tracks = [str(path) for path in planned]
    claimed = {target.resolve() for path in planned for target in _outputs(str(path), options, stems).values()}
    for uri in _expand_uris([text for text in inputs if is_uri(text)], refused):
        targets = {target.resolve() for target in _outputs(uri, options, stems).values()}
        if targets & claimed:
            refused.append(f"{uri}: its stems would go where another track's go; add {{trackext}} or a folder")
            continue
        claimed |= targets
        tracks.append(uri)
    return tracks, refused


def _outputs(track: str, options: OutputOptions, stems: Sequence[str]) -> dict[str, Path]:
    """The stem files of `track` (by name and extension: the default format is the input's)."""
    name = PurePosixPath(track.split("://", 1)[-1]).name
    extension = options.format or Path(name).suffix.lstrip(".").lower() or "wav"
    return output_paths(Path(name), Path(options.output), options.filename, stems, extension)


def _expand_uris(uris: Sequence[str], refused: list[str]) -> list[str]:
    """Each URI, or each file its glob matches (fsspec), in order; problems go to `refused`."""
    if not uris:
        return []
    try:
        import fsspec
    except ImportError:
        raise UsageError("URIs need fsspec (pip install fsspec, plus the scheme's package, e.g. s3fs)") from None
    found = []
    for uri in uris:
        try:
            filesystem, _, paths = fsspec.get_fs_token_paths(uri)
            files = [path for path in paths if filesystem.isfile(path)]
        except Exception as error:  # any scheme's own errors: one line, and the job goes on
            refused.append(f"{uri}: {type(error).__name__}: {_first_line(error)}")
            continue
        if not files:
            refused.append(f"{uri}: no such file, or no files match this pattern")
        found += [filesystem.unstrip_protocol(path) for path in sorted(files)]
    return found


class Worker:
    """One Ray actor's work: a `Separator` loaded once, and tracks separated one at a time.

    Each track goes through `files.separate_file`, as in `unmix separate`: the same naming, formats, atomic writes
    and bad-input handling, and a track whose stems all exist is skipped, so a rerun finishes what a killed job left
    and redoes nothing. A URI (read through fsspec, whose scheme package every worker needs) is copied to a
    temporary file of the same name, separated, and the copy removed.
    """

    def __init__(self, separator: SeparatorOptions, output: OutputOptions):
        from .separator import Separator

        options = asdict(separator)
        options["stems"] = list(separator.stems) if separator.stems else None
        self.separator = Separator.from_bundle(**options)
        self.output = output
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def separate(self, track: str) -> dict[str, Any]:
        """One track into the output folder; its ledger row (status "done", "skipped" or "failed")."""
        start = time.perf_counter()
        row: dict[str, Any] = {"track": track, "worker": self.name, "error": None, "audio_seconds": 0.0}
        try:
            result = self._separate(track)
        except (UnmixError, OSError) as error:
            row["status"], row["error"] = "failed", _first_line(error)
        except Exception as error:  # a backend failure on one file must not stop the job
            row["status"], row["error"] = "failed", f"{track}: {type(error).__name__}: {_first_line(error)}"
        else:
            row["status"] = "skipped" if result.skipped else "done"
            row["audio_seconds"] = result.seconds or 0.0
            row["outputs"] = {stem: str(path) for stem, path in result.outputs.items()}
        row["wall_seconds"] = time.perf_counter() - start
        return row

    def _separate(self, track: str) -> FileResult:
        if not is_uri(track):
            return self._write(Path(track))
        import fsspec

        name = PurePosixPath(track.split("://", 1)[1]).name
        with tempfile.TemporaryDirectory(prefix="unmix-batch-") as scratch:
            local = Path(scratch) / name  # the same name: the stems are named after it
            try:
                with fsspec.open(track, "rb") as source, open(local, "wb") as copy:
                    while block := source.read(1 << 22):
                        copy.write(block)
            except FileNotFoundError:
                raise AudioError(f"{track}: no such file") from None
            return self._write(local)

    def _write(self, path: Path) -> FileResult:
        output = self.output
        return separate_file(
            self.separator,
            path,
            output.output,
            filename=output.filename,
            format=output.format,
            overwrite=output.overwrite,
        )


def run_batch(
    tracks: Sequence[str],
    separator: SeparatorOptions,
    output: OutputOptions,
    stems: Sequence[str],
    *,
    workers: int | None = None,
    threads: int | None = None,
    gpus: float = 0.0,
    address: str | None = None,
    ledger: Path | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_workers: Callable[[list[Any]], None] | None = None,
    refused: Sequence[str] = (),
) -> BatchSummary:
    """Separate `tracks` on Ray actors; append a ledger row per finished track and return the summary.

    stems: the stems the workers write (the bundle's chosen ones): where a dying worker or an interrupt cuts a
        track short, the driver removes the hidden temporaries it leaves beside them.
    workers: actors (default: the cluster's CPUs over `threads`, or its GPUs over `gpus`, at most one per track).
    threads: CPU threads each actor's separator runs, and reserves in Ray (default: the largest node's CPUs over
        `workers`, or all of them: one worker per node, which measured faster than one per CPU, see bench/results).
    gpus: GPUs each actor reserves.
    address: a Ray cluster's address; None uses the Ray session this process has, or starts a local one.
    ledger: the JSON-lines file (default `<output>/unmix-batch.jsonl`). on_row(row) after each row is written;
    on_workers(actors) once the actors exist. refused: `list_tracks`'s problems, recorded as failed rows first.
    A worker that dies has its track retried on a fresh one, up to
    `MAX_ATTEMPTS` times. On KeyboardInterrupt the actors are killed and their tracks write nothing.
    """
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    summary = BatchSummary(ledger or Path(output.output) / LEDGER_FILE)
    begin = time.perf_counter()
    try:
        if threads is None:  # a node's CPUs, shared by the workers asked for
            node_cpus = max(node["Resources"].get("CPU", 1) for node in ray.nodes() if node["Alive"])
            threads = max(1, int(node_cpus) // (workers or 1))
        if workers is None:
            resources = ray.cluster_resources()
            capacity = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1) / threads
            workers = max(1, min(len(tracks), int(capacity)))
        options = SeparatorOptions(**{**asdict(separator), "threads": threads})
        job = _Job(ray, ray.remote(Worker).options(num_cpus=threads, num_gpus=gpus, max_restarts=0), options, output)
        job.start(workers)
        if on_workers:
            on_workers(job.actors)
        job.run(list(tracks), summary, stems, on_row, refused)
    finally:
        summary.wall_seconds = time.perf_counter() - begin
        if started:
            ray.shutdown()
    return summary


class _Job:
    """The driver's side: the actors, the tracks they run, and the ledger."""

    def __init__(self, ray, actor, separator: SeparatorOptions, output: OutputOptions):
        self.ray, self._actor, self._separator, self.output = ray, actor, separator, output
        self.actors: list[Any] = []
        self.run_id = uuid.uuid4().hex[:12]

    def start(self, workers: int) -> None:
        self.actors = [self._actor.remote(self._separator, self.output) for _ in range(workers)]

    def run(self, tracks: list[str], summary: BatchSummary, stems: Sequence[str], on_row, refused=()) -> None:
        """Record `refused`, then keep every actor busy with one track until every track is recorded."""
        from ray.exceptions import RayActorError

        queue, attempts = deque(tracks), dict.fromkeys(tracks, 0)
        idle = list(range(len(self.actors)))
        running: dict[Any, tuple[int, str]] = {}  # task → (actor index, track)
        summary.ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(summary.ledger, "a", encoding="utf-8") as ledger:
            for problem in refused:  # refused before anything ran: no track to name but the message's
                _record(ledger, _failed(None, problem) | {"run": self.run_id, "attempts": 0}, summary)
            try:
                while queue or running:
                    while idle and queue:
                        index, track = idle.pop(), queue.popleft()
                        running[self.actors[index].separate.remote(track)] = (index, track)
                    (ready,), _ = self.ray.wait(list(running), num_returns=1)
                    index, track = running.pop(ready)
                    idle.append(index)
                    attempts[track] += 1
                    try:
                        row = self.ray.get(ready)
                    except RayActorError as error:  # the process died (killed, out of memory, a crash)
                        self.actors[index] = self._actor.remote(self._separator, self.output)
                        _remove_temporaries(track, self.output, stems)
                        if attempts[track] < MAX_ATTEMPTS:
                            queue.appendleft(track)
                            continue
                        row = _failed(track, f"{track}: its worker died {attempts[track]} times ({_first_line(error)})")
                    _record(ledger, row | {"run": self.run_id, "attempts": attempts[track]}, summary)
                    if on_row:
                        on_row(row)
            except BaseException:
                for actor in self.actors:  # a killed worker writes no stem: they appear only when whole
                    self.ray.kill(actor)
                for _, track in running.values():
                    _remove_temporaries(track, self.output, stems)
                raise


def _remove_temporaries(track: str, output: OutputOptions, stems: Sequence[str]) -> None:
    """Remove the hidden temporaries (`atomic.new_temporary`'s) that a killed worker left beside `track`'s stems."""
    for target in _outputs(track, output, stems).values():
        for temporary in target.parent.glob(f".{glob_escape(target.name)}.*.part"):
            temporary.unlink(missing_ok=True)


def _first_line(error: BaseException) -> str:
    return (str(error) or type(error).__name__).strip().splitlines()[0]


def _failed(track: str | None, error: str) -> dict[str, Any]:
    return {"track": track, "status": "failed", "error": error, "audio_seconds": 0.0, "wall_seconds": 0.0}


def _record(ledger, row: dict[str, Any], summary: BatchSummary) -> None:
    """Append `row` to the ledger, durably (flushed and synced: what the ledger says survives a kill), and count it."""
    ledger.write(json.dumps(row | {"time": time.time()}, default=str) + "\n")
    ledger.flush()
    os.fsync(ledger.fileno())
    status = row["status"]
    if status == "done":
        summary.done += 1
        summary.audio_seconds += row["audio_seconds"]
    elif status == "skipped":
        summary.skipped += 1
    else:
        summary.failed += 1
        summary.problems.append(row["error"])


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("unmix batch runs on Ray: pip install 'unmix[ray]'") from None
    return ray
