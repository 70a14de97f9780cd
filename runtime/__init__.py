"""unmix.runtime: the lean separator (numpy + ONNX Runtime; TensorRT optional). Never imports torch.

from unmix.runtime import Separator
separator = Separator.from_bundle("default", device="cpu", stems=["vocals", "drums"])
stems = separator.separate(audio, sample_rate)          # {stem: array shaped like audio}
separator.separate_file("song.flac", "separated")       # separated/song/vocals.flac, …
separator.close()                                       # or: with Separator.from_bundle(...) as separator:
"""

# After .errors, which must be the first import: it makes Ctrl-C while the command line starts one line.
from importlib.metadata import PackageNotFoundError, version

from .callbacks import Cancel, Progress
from .errors import (
    AudioError,
    BackendError,
    Cancelled,
    OutputError,
    SeparatorClosed,
    StreamFinished,
    UnmixError,
    UsageError,
)
from .files import DEFAULT_FILENAME, FileResult, find_inputs, separate_file
from .manifest import BundleError, Manifest, read_manifest
from .separator import Separator, Stream, resolve_bundle

try:
    __version__ = version("unmix")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
del PackageNotFoundError, version

__all__ = [
    "DEFAULT_FILENAME",
    "AudioError",
    "BackendError",
    "BundleError",
    "Cancel",
    "Cancelled",
    "FileResult",
    "Manifest",
    "OutputError",
    "Progress",
    "Separator",
    "SeparatorClosed",
    "Stream",
    "StreamFinished",
    "UnmixError",
    "UsageError",
    "find_inputs",
    "read_manifest",
    "resolve_bundle",
    "separate_file",
]
