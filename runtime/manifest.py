"""The deploy bundle's `manifest.json`: what a bundle holds and the facts a runtime needs to run it.

Every file of a bundle is listed in it with its sha256, so a corrupted or edited bundle is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import NoReturn

from .errors import UnmixError

MANIFEST_FILE = "manifest.json"
FORMAT = "unmix-bundle"
VERSION = 1
STEMS = ("drums", "bass", "other", "vocals")
INPUT_NAME = "mixture"
OUTPUT_NAME = "stem"
CODES_NAME = "codes"


class BundleError(UnmixError, ValueError):
    """A bundle that is missing, malformed, or whose files do not match their checksums."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """Facts about a bundle. `models[precision][stem]` is a path relative to the bundle folder.

    A bundle is a folder:
        manifest.json          this schema
        <stem>.onnx            one graph per stem: mixture (batch, 1, time) → stem (batch, 1, time), codes
        <precision>/<stem>.onnx  further precisions (int8, fp16), when exported
        [<precision>/]<stem>.ort-extended.onnx  ONNX Runtime's offline-optimised copy (CPU EP, EXTENDED level)
        [<precision>/]fused.onnx  optional: all stems in one graph, one output per stem (named after it)
        parity.json, parity.md   the exporter's proof that the graphs compute what PyTorch computes
    """

    stems: list[str]
    sample_rate: int
    hop_length: int
    context_samples: int  # samples of context per side that make chunked output exact
    encoder_receptive_field: int  # samples
    decoder_receptive_field: int  # latent frames
    models: dict[str, dict[str, str]]
    ort_optimized: dict[str, dict[str, str]] = field(default_factory=dict)  # precision → stem → path
    fused: dict[str, str] = field(default_factory=dict)  # precision → path of the all-stems graph
    files: dict[str, str] = field(default_factory=dict)  # relative path → sha256
    provenance: dict = field(default_factory=dict)
    # {"band_weights": BandWeights.to_dict(), "spread_bins": {stem: bins}, "fitted": {...}}
    refinement: dict = field(default_factory=dict)
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    codes_name: str = CODES_NAME
    format: str = FORMAT
    version: int = VERSION

    @property
    def precisions(self) -> list[str]:
        return list(self.models)

    def passed_gate(self, precision: str) -> bool:
        """Whether the exporter's parity gate passed this precision's graphs (`provenance.export.passed_gate`; a
        bundle that does not record it passed nothing that one can rely on)."""
        export = self.provenance.get("export")
        return isinstance(export, dict) and precision in (export.get("passed_gate") or ())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """The manifest in `data`; `BundleError` (one line) for anything malformed, see `validate`."""
        if not isinstance(data, dict):
            raise BundleError(f"malformed manifest: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise BundleError(f"not an unmix bundle manifest (format={data.get('format')!r})")
        if data.get("version") != VERSION:
            raise BundleError(f"unsupported bundle version {data.get('version')!r}; this runtime reads {VERSION}")
        try:
            manifest = cls(**data)
        except TypeError as error:
            raise BundleError(f"malformed manifest: {error}") from None
        validate(manifest)
        return manifest


# Upper bounds that no real bundle comes near; they stop absurd values from allocating or looping for hours.
MIN_SAMPLE_RATE = 1000  # below this no audio model makes sense, and resampling to it fails late
MAX_SAMPLE_RATE = 1_000_000
MAX_HOP = 1 << 16
MAX_CONTEXT = 1 << 24  # samples per side: minutes of audio
SHA256_LENGTH = 64


def _fail(field_name: str, value, expected: str) -> NoReturn:
    raise BundleError(f"malformed manifest: {field_name} is {_short(value)}, expected {expected}")


def _short(value) -> str:
    """`repr(value)` cut to one short line, so that a huge value cannot flood the error."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _check_int(field_name: str, value, low: int, high: int) -> None:
    # bool is an int in Python, but `true` is no sample rate.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        _fail(field_name, value, f"an integer from {low} to {high}")


def _check_dict(field_name: str, value) -> None:
    if not isinstance(value, dict):
        _fail(field_name, value, "an object")


def _check_path(field_name: str, value, files: dict) -> None:
    """A graph path: a relative path inside the bundle, without '..', listed in `files` with its sha256."""
    if not isinstance(value, str) or not value:
        _fail(field_name, value, "a relative path")
    path = PurePosixPath(value)
    if path.is_absolute() or "\\" in value or ".." in path.parts:
        _fail(field_name, value, "a relative path inside the bundle without '..'")
    if value not in files:
        raise BundleError(f"malformed manifest: {field_name} {value!r} is not listed in files with its sha256")


def _check_stem_graphs(field_name: str, graphs, stems: list[str], files: dict, complete: bool) -> None:
    """`graphs`: stem → path for known stems; with `complete`, one for every stem of the bundle."""
    _check_dict(field_name, graphs)
    for stem, path in graphs.items():
        if stem not in stems:
            raise BundleError(
                f"malformed manifest: {field_name} has a graph for {stem!r}, which is not one of its stems"
            )
        _check_path(f"{field_name}.{stem}", path, files)
    if complete and (missing := [stem for stem in stems if stem not in graphs]):
        raise BundleError(f"malformed manifest: {field_name} has no graph for {', '.join(map(repr, missing))}")


def validate(manifest: Manifest) -> None:
    """`BundleError` (one line naming the field and value) unless every field has a usable type and range.

    Checked at load, so that a bad bundle fails once with a clear line instead of a traceback or a
    failure per file later.
    """
    stems = manifest.stems
    if not isinstance(stems, list) or not stems:
        _fail("stems", stems, f"a non-empty list of {', '.join(STEMS)}")
    for stem in stems:
        if stem not in STEMS:
            _fail("stems", stem, f"one of {', '.join(STEMS)}")
    if len(set(stems)) < len(stems):
        _fail("stems", stems, "each stem once")
    _check_int("sample_rate", manifest.sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
    _check_int("hop_length", manifest.hop_length, 1, MAX_HOP)
    _check_int("context_samples", manifest.context_samples, 0, MAX_CONTEXT)
    _check_int("encoder_receptive_field", manifest.encoder_receptive_field, 0, MAX_CONTEXT)
    _check_int("decoder_receptive_field", manifest.decoder_receptive_field, 0, MAX_CONTEXT)
    for name in ("files", "provenance", "refinement", "models", "ort_optimized", "fused"):
        _check_dict(name, getattr(manifest, name))
    for name, digest in manifest.files.items():
        _check_path("files entry", name, {name: digest})
        if not isinstance(digest, str) or len(digest) != SHA256_LENGTH or not _is_hex(digest):
            _fail(f"files[{name!r}]", digest, "a sha256 of 64 hex digits")
    if not manifest.models:
        _fail("models", manifest.models, "at least one precision")
    for precision, graphs in manifest.models.items():
        _check_stem_graphs(f"models.{precision}", graphs, stems, manifest.files, complete=True)
    for precision, graphs in manifest.ort_optimized.items():
        _check_stem_graphs(f"ort_optimized.{precision}", graphs, stems, manifest.files, complete=False)
    for precision, path in manifest.fused.items():
        _check_path(f"fused.{precision}", path, manifest.files)
    for name in ("input_name", "output_name", "codes_name"):
        if not isinstance(getattr(manifest, name), str) or not getattr(manifest, name):
            _fail(name, getattr(manifest, name), "a non-empty string")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


def graph_paths(manifest: Manifest) -> list[str]:
    """Every graph the manifest names (models, ort_optimized, fused), relative to the bundle folder."""
    paths = [path for graphs in manifest.models.values() for path in graphs.values()]
    paths += [path for graphs in manifest.ort_optimized.values() for path in graphs.values()]
    return paths + list(manifest.fused.values())


def check_inside(folder: Path, manifest: Manifest) -> None:
    """`BundleError` unless every listed file resolves (symlinks followed) inside the bundle folder."""
    root = folder.resolve()
    for name in dict.fromkeys([*manifest.files, *graph_paths(manifest)]):
        if not (folder / name).resolve().is_relative_to(root):
            raise BundleError(f"{folder}: {name} resolves outside the bundle folder")


def read_manifest(folder: str | Path, verify: bool = True) -> Manifest:
    """Read a bundle's manifest; with `verify`, check every listed file's sha256."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder}: not a bundle (no {MANIFEST_FILE})")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: invalid JSON: {error}") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None
    except BundleError as error:
        raise BundleError(f"{path}: {error}") from None
    except (ValueError, RecursionError) as error:  # an int of 5000 digits, arrays nested 100000 deep
        raise BundleError(f"{path}: unreadable JSON: {error}") from None
    except OSError as error:
        raise BundleError(f"{path}: cannot read: {error.strerror or error}") from None
    check_inside(folder, manifest)
    if verify:
        for name, expected in manifest.files.items():
            file = folder / name
            if not file.is_file():
                raise BundleError(f"{folder}: {name} is listed in the manifest but missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{folder}: {name} does not match its sha256 in the manifest")
    return manifest
