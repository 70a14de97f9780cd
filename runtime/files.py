"""File to files: stream-decode a track, separate it, stream-write one file per stem, atomically.

Memory stays bounded by the chunk size whatever the track length: blocks are decoded, separated and
written as they come. Stems are written to hidden temporary files renamed into place only when the
whole track is done, so an error, a cancellation or Ctrl-C leaves no partial output behind.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from .audio import (
    AUDIO_EXTENSIONS,
    MAX_CHANNELS,
    AtomicWriter,
    AudioInfo,
    disk_full,
    open_audio,
    output_format,
    read_blocks,
)
from .callbacks import Cancel, Progress
from .errors import AudioError, OutputError, UnmixError

if TYPE_CHECKING:
    from .separator import Separator

DEFAULT_FILENAME = "{track}/{stem}.{ext}"
TEMPLATE_FIELDS = {"track", "trackext", "stem", "ext"}
READ_BLOCK_FRAMES = 1 << 16


@dataclass
class FileResult:
    input: Path
    outputs: dict[str, Path]
    seconds: float | None  # length of the audio (None for a skipped file whose header does not give it)
    elapsed: float = 0.0  # wall time of the separation (0 when skipped)
    skipped: bool = False
    info: AudioInfo | None = field(default=None, repr=False)

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time over audio time."""
        return self.elapsed / self.seconds if self.seconds else 0.0


def check_template(template: str) -> None:
    """`OutputError` unless `template` is a relative path of plain known fields that names each stem apart.

    Only `{track}`, `{trackext}`, `{stem}` and `{ext}` are allowed, with no conversion (`!r`) and no
    format spec (`:>9`): a spec can raise, pad for minutes (`{stem:>999999999}`) or cut every stem's
    name to nothing (`{stem:.0}`), so all four stems would go to one file.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise OutputError(f"bad --filename template {template!r}: {error}") from None
    fields = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise OutputError(
                f"--filename template {template!r} uses unknown field {{{name}}}; "
                f"known: {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))}"
            )
        if spec or conversion:
            shown = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            raise OutputError(f"--filename template {template!r}: {shown} is not allowed; use plain {{{name}}}")
        fields.add(name)
    if "stem" not in fields:
        raise OutputError("--filename template must contain {stem}, or every stem would go to the same file")
    # The fields' own values are checked per track; here the template's literal text must stay under -o.
    shape = PurePath(template.format(track="t", trackext="e", stem="s", ext="x"))
    if "\0" in template:  # no file name can hold it; the OS would refuse it only once a track is decoded
        raise OutputError(f"--filename template {template!r} contains a NUL character")
    if shape.is_absolute() or ".." in shape.parts:
        raise OutputError(f"--filename template {template!r} must be a relative path under -o without '..'")


def track_name(input: Path) -> str:
    """The `{track}` of `input`: its name without the suffix; `OutputError` when that is empty or only dots.

    A file named `...wav` would otherwise give the track `..` and put its stems beside -o.
    """
    name = input.stem
    if not name.strip(".").strip():
        raise OutputError(
            f"{input}: its name gives the track name {name!r}, which is not a usable folder or file name; "
            "rename the file"
        )
    return name


def output_paths(input: Path, output_dir: Path, template: str, stems: Iterable[str], extension: str) -> dict[str, Path]:
    """Each stem's output path; `OutputError` unless every one lies inside `output_dir` and they all differ."""
    check_template(template)
    names = {"track": track_name(input), "trackext": input.suffix.lstrip("."), "ext": extension}
    paths = {stem: output_dir / template.format(stem=_safe_stem(stem), **names) for stem in stems}
    root = output_dir.resolve()
    for stem, path in paths.items():
        # resolve() follows symlinks too, so a link under -o that points elsewhere is refused as well.
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise OutputError(f"{input}: the {stem} output {path} would not lie inside the output folder {output_dir}")
    if len({path.resolve() for path in paths.values()}) < len(paths):
        raise OutputError(f"{input}: --filename {template!r} gives two stems the same output path")
    return paths


def _safe_stem(stem: str) -> str:
    """`stem` when it is a plain file name; `OutputError` for one that is a path (`../../x`) or only dots."""
    if not stem or "/" in stem or "\\" in stem or "\0" in stem or not stem.strip("."):
        raise OutputError(f"stem name {stem!r} cannot be used in a file name")
    return stem


def separate_file(
    separator: Separator,
    input: str | Path,
    output_dir: str | Path,
    *,
    filename: str = DEFAULT_FILENAME,
    format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> FileResult:
    """Separate `input` into `output_dir`/`filename` per stem (fields {track}, {trackext}, {stem}, {ext}).

    `format` is "wav", "flac", "ogg" or "mp3" (default: the input's); sample rate, channel count and,
    where the format holds it, bit depth are the input's. A track whose stem files all exist is
    skipped unless `overwrite`. Raises `AudioError`/`OutputError` with nothing written, and
    `Cancelled` (or KeyboardInterrupt) with nothing written.
    """
    input, output_dir = Path(input), Path(output_dir)
    handle, info = open_audio(input)
    with handle:
        fmt, subtype, extension = output_format(format, info)
        paths = output_paths(input, output_dir, filename, separator.stems, extension)
        if input.resolve() in {path.resolve() for path in paths.values()}:
            raise OutputError(f"{input}: an output would overwrite the input; choose another -o or --filename")
        if not overwrite and all(path.exists() for path in paths.values()):
            return FileResult(input, paths, info.seconds, skipped=True, info=info)
        if info.channels > MAX_CHANNELS:  # the stream's own message speaks of arrays passed the wrong way round
            raise AudioError(f"{input}: {info.channels} channels; unmix separates 1 to {MAX_CHANNELS} channels")
        start = time.perf_counter()
        try:  # before any output is opened: a rate or layout the separator refuses writes nothing
            stream = separator.stream(
                info.sample_rate, info.channels, progress=progress, cancel=cancel, total_frames=info.frames
            )
        except AudioError as error:
            raise AudioError(f"{input}: {error}") from None
        with _Outputs(paths, info.sample_rate, info.channels, fmt, subtype) as outputs:
            for block in read_blocks(handle, info, READ_BLOCK_FRAMES):
                try:
                    stems = stream.feed(block)
                except AudioError as error:
                    raise AudioError(f"{input}: {error}") from None
                outputs.write(stems)
            outputs.write(stream.finish())
        return FileResult(input, paths, info.seconds, time.perf_counter() - start, info=info)


class _Outputs:
    """The stems' writers: committed together on success, all removed (with new folders) otherwise."""

    def __init__(self, paths: dict[str, Path], sample_rate: int, channels: int, fmt: str, subtype: str):
        self.paths = paths
        self.format = (sample_rate, channels, fmt, subtype)
        self.writers: dict[str, AtomicWriter] = {}
        self.locks: list[_Lock] = []
        self.created: list[Path] = []

    def __enter__(self) -> _Outputs:
        started = time.time()
        try:
            for path in sorted(self.paths.values()):  # one order in every process: no lock-order deadlock
                self._make_folder(path.parent)
                self.locks.append(_lock(path))
            for stem, path in self.paths.items():
                remove_stale_temporaries(path, started)
                self.writers[stem] = AtomicWriter(path, *self.format)
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, stems: dict) -> None:
        for stem, audio in stems.items():
            if len(audio):
                self.writers[stem].write(audio)

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self._abort()
            return
        committed = []
        try:
            for writer in self.writers.values():  # every stem closed and read back before any is renamed
                writer.finish()
            for writer in self.writers.values():
                writer.commit()
                committed.append(writer.path)
        except BaseException:
            for path in committed:
                path.unlink(missing_ok=True)
            self._abort()
            raise
        self._unlock()

    def _make_folder(self, folder: Path) -> None:
        missing = [parent for parent in [folder, *folder.parents] if not parent.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create {folder}: {error.strerror or error}") from None
        self.created.extend(missing)  # innermost first, so removal works from the inside out

    def _unlock(self) -> None:
        while self.locks:
            self.locks.pop().release()

    def _abort(self) -> None:
        for writer in self.writers.values():
            writer.discard()
        self._unlock()
        for folder in dict.fromkeys(self.created):
            try:
                folder.rmdir()  # only if empty: never removes what someone else put there
            except OSError:
                pass


def lock_path(output: Path) -> Path:
    """The hidden lock file beside `output` that a run holds while it writes `output`."""
    return output.parent / f".{output.name}.unmix-lock"


class _Lock:
    """An exclusive `flock` on `lock_path(output)`; the file is removed when released."""

    def __init__(self, path: Path, descriptor: int):
        self.path, self.descriptor = path, descriptor

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)  # while still held: a waiting process then sees a new inode
        finally:
            os.close(self.descriptor)


def _lock(output: Path) -> _Lock:
    """Lock `output` for this process; `OutputError` (one line) when another unmix process is writing it."""
    path = lock_path(output)
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o666)
        except OSError as error:
            reason = "no space left on device" if disk_full(output.parent, error) else error.strerror or error
            raise OutputError(f"cannot write to {output.parent}: {reason}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise OutputError(
                f"{output} is being written by another unmix process; wait for it or choose another -o"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        try:
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(descriptor)
            raise
        if same:
            return _Lock(path, descriptor)
        os.close(descriptor)  # the holder removed the file between our open and flock: lock the new one


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.part")


def remove_stale_temporaries(output: Path, before: float) -> list[Path]:
    """Remove the hidden temporaries of `output` that a killed run left (made before `before`).

    Call it only while holding `output`'s lock: a live run holds that lock as long as its temporary exists,
    so any other temporary of `output` belongs to a run that is gone.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(output.parent))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if not match or match["name"] != output.name:
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime <= before:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def find_inputs(inputs: Iterable[str], exclude: Path | None = None) -> list[Path | AudioError]:
    """Expand files, folders (recursively, audio extensions only) and glob patterns, in order.

    An argument that names nothing usable becomes an `AudioError` in the list, so that a batch
    reports it and goes on. Files under `exclude` (the output folder) are left out of folder scans
    and globs, so earlier outputs are never taken for inputs.
    """
    excluded = exclude.resolve() if exclude else None

    def keep(path: Path) -> bool:
        return excluded is None or not path.resolve().is_relative_to(excluded)

    found: list[Path | AudioError] = []
    for argument in inputs:
        path = Path(argument)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            audio = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file() and keep(p)
            )
            found.extend(audio or [AudioError(f"{path}: no audio files in this folder")])
        elif glob.has_magic(argument):
            matches = sorted(
                Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file() and keep(Path(p))
            )
            found.extend(matches or [AudioError(f"{argument}: no files match this pattern")])
        elif path.exists():  # a FIFO, device or socket: it exists, but is nothing to seek through twice
            found.append(AudioError(f"{path}: not a regular file or folder (a pipe, device or socket)"))
        else:
            found.append(AudioError(f"{path}: no such file or folder"))
    return found


def plan_outputs(
    found: list[Path | AudioError], output: Path, filename: str, format: str | None, stems: Iterable[str]
) -> tuple[list[Path], list[str]]:
    """Every output path of a batch (`find_inputs`'s list), planned before anything is written.

    Returns the inputs to separate and the one-line problems of those refused: an input that cannot be
    read, an output path that is one of the inputs (refused even with --overwrite: it would destroy an
    input of this batch), and an output path that an earlier track of the batch already takes.
    """
    files = [path for path in found if not isinstance(path, Exception)]
    inputs = {path.resolve(): path for path in files}
    planned: list[Path] = []
    refused: list[str] = []
    seen: set[Path] = set()
    claimed: dict[Path, Path] = {}  # output path → the input whose stem goes there
    for path in found:
        if isinstance(path, Exception):
            refused.append(str(path))
            continue
        if path.resolve() in seen:  # the same file named twice (a folder and a glob, say): once is enough
            continue
        seen.add(path.resolve())
        try:
            handle, info = open_audio(path)
            with handle:
                extension = output_format(format, info)[2]
            outputs = output_paths(path, output, filename, stems, extension)
        except UnmixError as error:
            refused.append(str(error))
            continue
        resolved = {stem: target.resolve() for stem, target in outputs.items()}
        clobbered = [(stem, outputs[stem]) for stem, target in resolved.items() if target in inputs]
        taken = [claimed[target] for target in resolved.values() if target in claimed]
        if clobbered:
            stem, target = clobbered[0]
            refused.append(
                f"{path}: its {stem} output {target} is an input of this run; choose another -o or --filename"
            )
        elif taken:
            refused.append(
                f"{path}: its stems would go where those of {taken[0]} go; add {{trackext}} or a folder to --filename"
            )
        else:
            claimed.update(dict.fromkeys(resolved.values(), path))
            planned.append(path)
    return planned, refused
