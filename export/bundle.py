"""`export_bundle`: separators in, a validated deploy bundle folder out, written atomically."""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from unmix.runtime.manifest import (
    CODES_NAME,
    INPUT_NAME,
    MANIFEST_FILE,
    OUTPUT_NAME,
    Manifest,
    sha256_file,
)
from unmix.train.config import VQVAEConfig
from unmix.train.model import StemSeparator

from .checks import ExportError, check_model, check_runs
from .graph import StemGraph
from .onnx_export import OPSET, export_onnx

_STEM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def export_bundle(
    separators: dict[str, StemSeparator],
    out_dir: str | Path,
    *,
    provenance: dict | None = None,
    config: VQVAEConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Export one ONNX graph per stem, check each, and write the bundle folder `out_dir`.

    Graphs: `<stem>.onnx`, opset 17, `mixture` float32 (batch, 1, time) → `stem` float32
    (batch, 1, time) and `codes` int64 (batch, time / hop); time must be a multiple of the hop.
    The folder appears only when everything is written and checked; on any failure nothing is
    left behind and `ExportError` (or the underlying error) is raised. An existing `out_dir` is
    replaced only with `overwrite=True`.
    """
    out_dir = Path(out_dir)
    config = _common_config(separators, config)
    provenance = dict(provenance or {}) | {"tools": tool_versions()}
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} exists; choose another folder or overwrite it explicitly")
    with _atomic_folder(out_dir) as folder:
        models = {}
        for stem, separator in separators.items():
            models[stem] = f"{stem}.onnx"
            graph = StemGraph(separator.float().eval())
            path = export_onnx(
                graph,
                folder / models[stem],
                [OUTPUT_NAME, CODES_NAME],
                hop_length=config.hop_length,
                metadata=graph_metadata(config, provenance, stem=stem, precision="fp32"),
            )
            check_model(path)
            check_runs(path, config.hop_length, reference=_torch_reference(separator))
        manifest = bundle_manifest(config, {"fp32": models}, provenance)
        write_manifest(folder, manifest)
    return out_dir


def bundle_facts(config: VQVAEConfig) -> dict:
    """The facts a runtime needs, shared by the manifest and every graph's metadata_props."""
    return {
        "sample_rate": config.sample_rate,
        "hop_length": config.hop_length,
        "context_samples": config.context_samples(),
        "encoder_receptive_field": config.encoder_receptive_field(),
        "decoder_receptive_field": config.decoder_receptive_field(),
    }


def graph_metadata(config: VQVAEConfig, provenance: dict, *, stem: str, precision: str) -> dict:
    return {
        "unmix.format": "unmix-bundle-graph",
        "unmix.stem": stem,
        "unmix.precision": precision,
        **{f"unmix.{key}": value for key, value in bundle_facts(config).items()},
        "unmix.input_name": INPUT_NAME,
        "unmix.output_name": OUTPUT_NAME,
        "unmix.codes_name": CODES_NAME,
        "unmix.config": config.to_dict(),
        "unmix.provenance": provenance,
    }


def bundle_manifest(config: VQVAEConfig, models: dict[str, dict[str, str]], provenance: dict) -> Manifest:
    stems = list(next(iter(models.values())))
    return Manifest(stems=stems, models=models, provenance=provenance, **bundle_facts(config))


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Fill in the sha256 of every file in `folder` and write manifest.json."""
    manifest.files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    (folder / MANIFEST_FILE).write_text(manifest.to_json() + "\n")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__}
    versions["onnxruntime"] = onnxruntime.__version__
    versions["opset"] = str(OPSET)
    try:
        versions["unmix"] = metadata.version("unmix")
    except metadata.PackageNotFoundError:
        versions["unmix"] = "unknown"
    return versions


def _common_config(separators: dict[str, StemSeparator], config: VQVAEConfig | None) -> VQVAEConfig:
    if not separators:
        raise ExportError("no stems to export")
    for stem in separators:
        if not _STEM_NAME.match(stem):
            raise ExportError(f"stem name {stem!r} is not a simple lower-case name (it becomes a file name)")
    configs = {s.mixture_encoder.config for s in separators.values()} | {s.stem_decoder.config for s in separators.values()}
    if config is None:
        if len(configs) != 1:
            raise ExportError("the separators were built from different configs; pass config= explicitly")
        config = configs.pop()
    for stem, separator in separators.items():
        for part in (separator.mixture_encoder, separator.stem_decoder):
            if (part.config.hop_length, part.config.emb_width) != (config.hop_length, config.emb_width):
                raise ExportError(f"stem {stem!r}: its model's hop or embedding width differs from the config's")
    return config


def _torch_reference(separator: StemSeparator):
    def run(mixture: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            stem, codes = separator(torch.from_numpy(mixture))
        return {OUTPUT_NAME: stem.numpy(), CODES_NAME: codes.numpy()}

    return run


@contextmanager
def _atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary sibling folder that replaces `target` only if the block completes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
