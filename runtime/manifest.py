"""The deploy bundle's `manifest.json`: what a bundle holds and the facts a runtime needs to run it.

A bundle is a folder:
    manifest.json          this file's schema (`Manifest`)
    <stem>.onnx            one graph per stem: mixture (batch, 1, time) → stem (batch, 1, time), codes
    <precision>/<stem>.onnx  further precisions (int8, fp16), when exported
    [<precision>/]<stem>.ort-extended.onnx  ONNX Runtime's offline-optimised copy (CPU EP, EXTENDED level)
    [<precision>/]fused.onnx  optional: all stems in one graph, one output per stem (named after it)
    parity.json, parity.md   the exporter's proof that the graphs compute what PyTorch computes
Every file is listed with its sha256, so a corrupted or edited bundle is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FILE = "manifest.json"
FORMAT = "unmix-bundle"
VERSION = 1
STEMS = ("drums", "bass", "other", "vocals")
INPUT_NAME = "mixture"
OUTPUT_NAME = "stem"
CODES_NAME = "codes"


class BundleError(ValueError):
    """A bundle that is missing, malformed, or whose files do not match their checksums."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """Facts about a bundle. `models[precision][stem]` is a path relative to the bundle folder."""

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        if data.get("format") != FORMAT:
            raise BundleError(f"not an unmix bundle manifest (format={data.get('format')!r})")
        if data.get("version") != VERSION:
            raise BundleError(f"unsupported bundle version {data.get('version')!r}; this runtime reads {VERSION}")
        try:
            return cls(**data)
        except TypeError as error:
            raise BundleError(f"malformed manifest: {error}") from None


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
    if verify:
        for name, expected in manifest.files.items():
            file = folder / name
            if not file.is_file():
                raise BundleError(f"{folder}: {name} is listed in the manifest but missing")
            if sha256_file(file) != expected:
                raise BundleError(f"{folder}: {name} does not match its sha256 in the manifest")
    return manifest
