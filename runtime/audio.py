"""Audio files through libsndfile (soundfile): streaming reads that notice damage, atomic streaming writes.

Reading never loads a whole file: `read_blocks` yields float32 blocks and raises `AudioError` for a
truncated or corrupt file (after the fact, when the decoder stops early). A file whose header leaves its
length out (a FLAC written to a pipe) is read straight through, its length learnt at the end. Writing goes
to a hidden temporary file beside the target, renamed into place only by `commit`; `discard` removes it.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import new_temporary
from .errors import AudioError, OutputError

# What a folder scan picks up: the containers libsndfile decodes.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".w64", ".rf64", ".caf"}
)
# Output formats by the name users give them, with their file extension.
OUTPUT_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}
_FORMAT_EXTENSIONS = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "W64": "wav",
    "FLAC": "flac",
    "OGG": "ogg",
    "MP3": "mp3",
}
# When a format cannot hold the input's subtype (a float WAV into FLAC, say): its most faithful one.
_FALLBACK_SUBTYPES = {"WAV": "FLOAT", "FLAC": "PCM_24", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}
_MAX_CHANNELS = {"MP3": 2}  # per output format
MAX_CHANNELS = 64  # separated; far above any real layout: catches (channels, frames) arrays passed the wrong way round
# A WAV/AIFF header that promises more data than the file holds (ignoring streaming placeholders).
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
READ_BACK_FRAMES = 1 << 16  # frames per read when a written stem is checked
_SIZE_PLACEHOLDERS = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 1}
# The frame count libsndfile reports when the header leaves the length out (SF_COUNT_MAX): a FLAC encoded to a
# pipe (`flac - < raw`, `ffmpeg … -f flac pipe:`) has total_samples 0 in its STREAMINFO.
_UNKNOWN_FRAMES = 2**63 - 1


class _SoundFile(sf.SoundFile):
    """A SoundFile that, once `sequential`, reads straight on and never seeks.

    soundfile seeks to the end of each read it has just made; libsndfile cannot seek a FLAC stream of unknown
    length to its end, so the last read of such a file would fail (its samples lost). Told the file is not
    seekable, soundfile reads without seeking, which needs no length.
    """

    sequential = False

    def seekable(self) -> bool:
        return not self.sequential and super().seekable()


@dataclass
class AudioInfo:
    path: Path
    frames: int | None  # None while unknown: a header without the length; `read_blocks` sets it at the end
    channels: int
    sample_rate: int
    format: str  # libsndfile major format, e.g. "WAV"
    subtype: str  # e.g. "PCM_24", "FLOAT", "MPEG_LAYER_III"

    @property
    def seconds(self) -> float | None:
        return self.frames / self.sample_rate if self.frames is not None else None


def open_audio(path: str | Path) -> tuple[sf.SoundFile, AudioInfo]:
    """Open `path` for streaming reads; `AudioError` for a missing, non-audio, empty or truncated file."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    try:
        handle = _SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_libsndfile_reason(error)})") from None
    frames: int | None = handle.frames
    if handle.frames >= _UNKNOWN_FRAMES:
        frames, handle.sequential = None, True
    info = AudioInfo(path, frames, handle.channels, handle.samplerate, handle.format, handle.subtype)
    problem = _header_problem(handle, info)
    if problem:
        handle.close()
        raise AudioError(f"{path}: {problem}")
    return handle, info


_ZERO_LENGTH = "zero-length audio (no samples to separate)"


def _header_problem(handle: sf.SoundFile, info: AudioInfo) -> str | None:
    if info.frames is not None and info.frames <= 0:
        return _ZERO_LENGTH
    text = handle.extra_info
    for declared, present in _SHORT_CHUNK.findall(text):
        if int(declared) > int(present) and int(declared) not in _SIZE_PLACEHOLDERS:
            return f"truncated file (the header declares {declared} bytes of audio, the file holds {present})"
    if "lacks an end-of-stream bit" in text:
        return "truncated file (the Ogg stream has no end)"
    return None


def read_blocks(handle: sf.SoundFile, info: AudioInfo, block_frames: int) -> Iterator[np.ndarray]:
    """Float32 blocks (frames, channels) of the whole file; `AudioError` if decoding stops early.

    For a file of unknown length (`info.frames` None) a damaged stream shows only as a decoding error; the
    frames decoded become `info.frames` once the end is reached.
    """
    read = 0
    while True:
        try:
            block = handle.read(block_frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as error:
            of = f" of {info.frames}" if info.frames is not None else ""
            raise AudioError(
                f"{info.path}: decoding failed after {read}{of} frames, truncated or corrupt file "
                f"({_libsndfile_reason(error)})"
            ) from None
        if not len(block):
            break
        read += len(block)
        yield block
    if info.frames is None:
        if not read:
            raise AudioError(f"{info.path}: {_ZERO_LENGTH}")
        info.frames = read
        return
    # MP3 lengths come from a header or an estimate; allow two MPEG frames of slack there.
    slack = 2 * 1152 if info.format == "MP3" else 0
    if read + slack < info.frames:
        raise AudioError(f"{info.path}: truncated or corrupt file (decoded {read} of {info.frames} frames)")


def _libsndfile_reason(error: Exception) -> str:
    text = str(error)
    reason = text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text
    # libsndfile says this of files it cannot parse, although they exist: say what it means.
    return "unrecognised or corrupt data" if "does not exist or is not a regular file" in reason else reason


def output_format(name: str | None, info: AudioInfo) -> tuple[str, str, str]:
    """(libsndfile format, subtype, extension) for writing stems of `info`.

    `name` is one of OUTPUT_FORMATS, or None to keep the input's format (WAV when the input's
    container cannot be written). The input's subtype (bit depth, codec) is kept when the format
    can hold it.
    """
    if name is None:
        fmt = info.format if info.format in _FORMAT_EXTENSIONS else "WAV"
    elif name.lower() in OUTPUT_FORMATS:
        fmt = OUTPUT_FORMATS[name.lower()]
    else:
        raise OutputError(f"unknown output format {name!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    subtype = (
        info.subtype if sf.check_format(fmt, info.subtype) else _FALLBACK_SUBTYPES.get(fmt, sf.default_subtype(fmt))
    )
    # An input without a suffix keeps its format but would give "drums."; name the format instead.
    kept = info.path.suffix.lower().lstrip(".") if name is None and fmt == info.format else ""
    extension = kept or _FORMAT_EXTENSIONS[fmt]
    limit = _MAX_CHANNELS.get(fmt)
    if limit and info.channels > limit:
        raise OutputError(
            f"{fmt} holds at most {limit} channels, the input has {info.channels}; choose another --format"
        )
    return fmt, subtype, extension


def disk_full(folder: Path, error: BaseException | None = None) -> bool:
    """Whether `error` says ENOSPC, or the filesystem holding `folder` has (almost) no free space left."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if error is not None and "no space left" in str(error).lower():
        return True
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _FULL_BYTES


# Free space below which a failed write is put down to a full disk: a few filesystem blocks.
_FULL_BYTES = 64 * 1024


def write_failure(path: Path, error: BaseException | str) -> OutputError:
    """The one-line `OutputError` for a failed write of `path`, naming a full disk as such."""
    if disk_full(path.parent, error if isinstance(error, BaseException) else None):
        return OutputError(f"writing {path} failed: no space left on device")
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return OutputError(f"writing {path} failed: {(reason or type(error).__name__).splitlines()[0]}")


class AtomicWriter:
    """Streams audio into a hidden temporary file beside `path`; `commit` renames it into place.

    `finish` closes the temporary and reads it back (frame count, channels, and a full decode): libsndfile
    reports nothing when a close fails, so a stem cut short by a full disk would otherwise be renamed into place.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, fmt: str, subtype: str):
        self.path = path
        self.channels = channels
        self.frames = 0
        self.finished = False
        try:
            self.temp = new_temporary(path)
        except OSError as error:
            if disk_full(path.parent, error):
                raise OutputError(f"cannot write to {path.parent}: no space left on device") from None
            raise OutputError(f"cannot write to {path.parent}: {error.strerror or error}") from None
        try:
            self._file = sf.SoundFile(str(self.temp), "w", sample_rate, channels, subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as error:
            self.temp.unlink(missing_ok=True)
            if disk_full(path.parent, error):
                raise OutputError(f"cannot write to {path.parent}: no space left on device") from None
            raise OutputError(
                f"cannot write {fmt}/{subtype} with {channels} channels at {sample_rate} Hz: {_libsndfile_reason(error)}"
            ) from None
        except BaseException:  # Ctrl-C before the caller holds this writer: nobody else could remove the file
            self.temp.unlink(missing_ok=True)
            raise

    def write(self, block: np.ndarray) -> None:
        """Append (frames, channels); soundfile clips to ±1 for integer formats (it sets SFC_SET_CLIPPING)."""
        try:
            self._file.write(block)
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            raise write_failure(self.path, error) from None
        self.frames += len(block)

    def finish(self) -> None:
        """Close the temporary and check it holds what was written; `OutputError` (temporary removed) if not."""
        if self.finished:
            return
        try:
            self._file.close()
            problem: str | BaseException | None = self._verify()
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            problem = error
        if problem is not None:
            self.temp.unlink(missing_ok=True)
            raise write_failure(self.path, problem) from None
        self.finished = True

    def _verify(self) -> str | None:
        """None when the closed temporary decodes to exactly the frames and channels written, else what is wrong."""
        try:
            with sf.SoundFile(str(self.temp)) as check:
                if check.channels != self.channels:
                    return f"the file has {check.channels} channels, {self.channels} were written"
                if check.format != "MP3" and check.frames != self.frames:
                    return f"the file holds {check.frames} frames, {self.frames} were written"
                decoded = 0
                while True:
                    block = check.read(READ_BACK_FRAMES, dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    decoded += len(block)
        except (sf.LibsndfileError, RuntimeError) as error:
            return f"the written file does not decode ({_libsndfile_reason(error)})"
        # MP3 encoders pad and estimate lengths: allow two MPEG frames either way.
        slack = 2 * 1152 if self._format_is_mp3() else 0
        if abs(decoded - self.frames) > slack:
            return f"the written file decodes to {decoded} frames, {self.frames} were written"
        return None

    def _format_is_mp3(self) -> bool:
        return self._file.format == "MP3"

    def commit(self) -> None:
        self.finish()
        try:
            os.replace(self.temp, self.path)
        except OSError as error:
            self.temp.unlink(missing_ok=True)
            raise write_failure(self.path, error) from None

    def discard(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except (sf.LibsndfileError, RuntimeError, OSError):
                pass
        self.temp.unlink(missing_ok=True)
