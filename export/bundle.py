"""`export_bundle`: separators in, a validated deploy bundle folder out, written atomically."""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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

from .audio import ParityAudio, synthetic_audio
from .checks import ExportError, Reference, check_model, check_runs, cpu_session
from .graph import FusedGraph, StemGraph
from .onnx_export import OPSET, export_onnx
from .parity import gate, measure_parity, write_parity
from .precision import optimize_for_ort, quantize_int8

_STEM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def export_bundle(
    separators: dict[str, StemSeparator],
    out_dir: str | Path,
    *,
    provenance: dict | None = None,
    config: VQVAEConfig | None = None,
    parity_audio: ParityAudio | None = None,
    int8_calibration: Sequence[np.ndarray] | None = None,
    calibration_method: str = "minmax",
    fp16: bool = False,
    fused: bool = False,
    ort_optimized: bool = True,
    max_sdr_loss: float = 0.2,
    force: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export, check and prove one ONNX graph per stem, and write the bundle folder `out_dir`.

    Graphs: `<stem>.onnx`, opset 17, `mixture` float32 (batch, 1, time) → `stem` float32
    (batch, 1, time) and `codes` int64 (batch, time / hop); time must be a multiple of the hop.
    Optional: int8 (static QDQ calibrated on `int8_calibration`, mono mixture chunks), fp16 (for
    GPUs), a fused all-stems graph, and ONNX Runtime's EXTENDED-optimised copies of the CPU graphs.
    Every graph passes the ONNX checker and ONNX Runtime runs; parity with PyTorch on
    `parity_audio` (default: a synthetic song) is written to parity.json/parity.md and gated:
    fp32 must agree exactly on codes; int8/fp16 may lose at most `max_sdr_loss` dB unless `force`.
    The folder appears only when all of it passed; otherwise nothing is left and `ExportError`
    (or the underlying error) is raised. An existing `out_dir` is replaced only with `overwrite`.
    """
    out_dir = Path(out_dir)
    config = _common_config(separators, config)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} exists; choose another folder or overwrite it explicitly")
    audio = parity_audio or synthetic_audio(config.sample_rate, config.hop_length, segments=2, seconds=1.0)
    provenance = dict(provenance or {}) | {"tools": tool_versions()}
    provenance["export"] = {"parity_audio": audio.description, "max_sdr_loss_db": max_sdr_loss}
    if int8_calibration is not None:
        provenance["export"]["int8_calibration"] = {
            "chunks": len(int8_calibration),
            "seconds": round(sum(len(c) for c in int8_calibration) / config.sample_rate, 3),
            "method": calibration_method,
        }
    hop = config.hop_length
    with _atomic_folder(out_dir) as folder:
        models: dict[str, dict[str, str]] = {"fp32": {}}
        for stem, separator in separators.items():
            separator.float().eval()
            models["fp32"][stem] = f"{stem}.onnx"
            path = _export(StemGraph(separator), folder, models["fp32"][stem], config, provenance, stem, "fp32")
            check_runs(path, hop, reference=_torch_reference(separator))
        if int8_calibration is not None:
            models["int8"] = {stem: f"int8/{stem}.onnx" for stem in separators}
            for stem, name in models["int8"].items():
                (folder / name).parent.mkdir(exist_ok=True)
                quantize_int8(folder / models["fp32"][stem], folder / name, int8_calibration, method=calibration_method)
                _set_precision(folder / name, "int8")
                check_model(folder / name)
                check_runs(folder / name, hop)
        if fp16:
            models["fp16"] = {stem: f"fp16/{stem}.onnx" for stem in separators}
            for stem, separator in separators.items():
                (folder / models["fp16"][stem]).parent.mkdir(exist_ok=True)
                path = _export(StemGraph(separator, half=True), folder, models["fp16"][stem], config, provenance, stem, "fp16")
                check_runs(path, hop)
        fused_models = {}
        if fused:
            for precision in ("fp32", "fp16") if fp16 else ("fp32",):
                fused_models[precision] = "fused.onnx" if precision == "fp32" else f"{precision}/fused.onnx"
                graph = FusedGraph(separators, half=precision == "fp16")
                path = _export(graph, folder, fused_models[precision], config, provenance, "+".join(separators), precision)
                # fp32: each output must equal its per-stem graph's, which already equals PyTorch.
                exact = _graphs_reference({s: folder / n for s, n in models["fp32"].items()}) if precision == "fp32" else None
                check_runs(path, hop, reference=exact)
        optimized = {}
        if ort_optimized:
            for precision in ("fp32", "int8"):
                for stem, name in models.get(precision, {}).items():
                    target = name.removesuffix(".onnx") + ".ort-extended.onnx"
                    optimize_for_ort(folder / name, folder / target)
                    exact = _graph_reference(folder / name) if precision == "fp32" else None
                    check_runs(folder / target, hop, reference=exact)
                    optimized.setdefault(precision, {})[stem] = target
        report = measure_parity(
            separators, {p: {s: folder / name for s, name in stems.items()} for p, stems in models.items()}, audio
        )
        failures = gate(report, max_sdr_loss)
        report["forced"] = force and any(failures[p] for p in failures if p != "fp32")
        write_parity(folder, report)
        if failures["fp32"]:
            raise ExportError("fp32 graphs differ from PyTorch: " + "; ".join(failures["fp32"]))
        reduced = [f"{p} {problem}" for p, problems in failures.items() if p != "fp32" for problem in problems]
        if reduced and not force:
            raise ExportError("refusing to write: " + "; ".join(reduced) + " (force to write anyway)")
        manifest = bundle_manifest(config, models, provenance)
        manifest.ort_optimized, manifest.fused = optimized, fused_models
        write_manifest(folder, manifest)
    return out_dir


def _export(
    graph: torch.nn.Module, folder: Path, name: str, config: VQVAEConfig, provenance: dict, stem: str, precision: str
) -> Path:
    outputs = graph.stems if isinstance(graph, FusedGraph) else [OUTPUT_NAME, CODES_NAME]
    metadata = graph_metadata(config, provenance, stem=stem, precision=precision)
    path = export_onnx(graph, folder / name, outputs, hop_length=config.hop_length, metadata=metadata)
    check_model(path)
    return path


def _set_precision(path: Path, precision: str) -> None:
    model = onnx.load(str(path))
    for entry in model.metadata_props:
        if entry.key == "unmix.precision":
            entry.value = precision
    onnx.save(model, str(path))


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


def _torch_reference(separator: StemSeparator) -> Reference:
    """PyTorch's `stem` and `codes` for a mixture batch."""

    def run(mixture: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            stem, codes = separator(torch.from_numpy(mixture))
        return {OUTPUT_NAME: stem.numpy(), CODES_NAME: codes.numpy()}

    return run


def _graph_reference(path: Path) -> Reference:
    """A checked graph's outputs by name: the reference for its derived copies (cheaper than PyTorch)."""
    session = cpu_session(path)
    names = [output.name for output in session.get_outputs()]
    return lambda mixture: dict(zip(names, session.run(None, {INPUT_NAME: mixture})))


def _graphs_reference(paths: dict[str, Path]) -> Reference:
    """Per-stem graphs' `stem` outputs under the stem names: the reference for a fused graph."""
    sessions = {stem: cpu_session(path) for stem, path in paths.items()}
    return lambda mixture: {stem: s.run([OUTPUT_NAME], {INPUT_NAME: mixture})[0] for stem, s in sessions.items()}


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
