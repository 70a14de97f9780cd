"""`export_bundle`: separators in, a validated deploy bundle folder out, written atomically."""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from unmix.runtime.atomic import atomic_folder
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
from .precision import CALIBRATION_METHODS, NNCF, optimize_for_ort, quantize_int8
from .reference import TorchReference

_STEM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def export_bundle(
    separators: dict[str, StemSeparator],
    out_dir: str | Path,
    *,
    provenance: dict | None = None,
    config: VQVAEConfig | None = None,
    parity_audio: ParityAudio | None = None,
    int8_calibration: Sequence[np.ndarray] | None = None,
    calibration_method: str = NNCF,
    fp16: bool = False,
    fused: bool = False,
    ort_optimized: bool = True,
    max_sdr_loss: float = 0.1,
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
    if int8_calibration is not None and calibration_method not in CALIBRATION_METHODS:
        raise ExportError(
            f"unknown calibration method {calibration_method!r}; choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    if int8_calibration is not None and not len(int8_calibration):
        raise ExportError("int8 needs at least one calibration chunk")
    audio = parity_audio or synthetic_audio(config.sample_rate, config.hop_length, segments=2, seconds=1.0)
    provenance = dict(provenance or {}) | {"tools": tool_versions()}
    provenance["export"] = {"parity_audio": audio.description, "max_sdr_loss_db": max_sdr_loss}
    if int8_calibration is not None:
        provenance["export"]["int8_calibration"] = {
            "chunks": len(int8_calibration),
            "seconds": round(sum(len(c) for c in int8_calibration) / config.sample_rate, 3),
            "method": calibration_method,
        }
    with atomic_folder(out_dir) as folder:
        writer = _BundleWriter(folder, separators, config, provenance)
        writer.export_fp32()
        if int8_calibration is not None:
            writer.quantize_int8(int8_calibration, calibration_method)
        if fp16:
            writer.export_fp16()
        if fused:
            writer.export_fused()
        if ort_optimized:
            writer.optimize_for_ort()
        writer.prove(audio, max_sdr_loss, force)
        writer.write_manifest()
    return out_dir


class _BundleWriter:
    """The steps of one export into an unfinished bundle folder; each step checks what it wrote."""

    def __init__(self, folder: Path, separators: dict[str, StemSeparator], config: VQVAEConfig, provenance: dict):
        self.folder, self.separators, self.config, self.provenance = folder, separators, config, provenance
        self.models: dict[str, dict[str, str]] = {}  # precision → stem → file
        self.fused: dict[str, str] = {}
        self.optimized: dict[str, dict[str, str]] = {}
        self.runs: list[dict] = []  # the ONNX Runtime checks, for the parity report

    def export_fp32(self) -> None:
        """`<stem>.onnx`: equal to PyTorch (codes exactly, audio within 1e-4) at every probe shape."""
        self.models["fp32"] = {}
        for stem, separator in self.separators.items():
            self.models["fp32"][stem] = f"{stem}.onnx"
            path = self._export(StemGraph(separator), self.models["fp32"][stem], [stem], "fp32")
            self._check_runs(path, reference=TorchReference(separator))

    def quantize_int8(self, calibration: Sequence[np.ndarray], method: str) -> None:
        """`int8/<stem>.onnx` from the fp32 graphs; their accuracy is judged by `prove`."""
        self.models["int8"] = {stem: f"int8/{stem}.onnx" for stem in self.separators}
        for stem, name in self.models["int8"].items():
            (self.folder / name).parent.mkdir(exist_ok=True)
            quantize_int8(self.folder / self.models["fp32"][stem], self.folder / name, calibration, method=method)
            _set_metadata(self.folder / name, "unmix.precision", "int8")
            check_model(self.folder / name)
            self._check_runs(self.folder / name, batch_independent=False)

    def export_fp16(self) -> None:
        """`fp16/<stem>.onnx`: fp16 encoder and decoder around the fp32 vq island, for GPUs."""
        self.models["fp16"] = {stem: f"fp16/{stem}.onnx" for stem in self.separators}
        for stem, separator in self.separators.items():
            (self.folder / self.models["fp16"][stem]).parent.mkdir(exist_ok=True)
            path = self._export(StemGraph(separator, half=True), self.models["fp16"][stem], [stem], "fp16")
            self._check_runs(path, batch_independent=False)

    def export_fused(self) -> None:
        """`[fp16/]fused.onnx`: all stems in one graph; in fp32 each output equals its per-stem graph's."""
        for precision in [p for p in ("fp32", "fp16") if p in self.models]:
            self.fused[precision] = "fused.onnx" if precision == "fp32" else f"{precision}/fused.onnx"
            graph = FusedGraph(self.separators, half=precision == "fp16")
            path = self._export(graph, self.fused[precision], list(self.separators), precision)
            if precision == "fp32":
                self._check_runs(
                    path, reference=_graphs_reference({s: self.folder / n for s, n in self.models["fp32"].items()})
                )
            else:
                self._check_runs(path, batch_independent=False)

    def optimize_for_ort(self) -> None:
        """`<...>.ort-extended.onnx` for the CPU precisions; the fp32 copy must compute what its source does."""
        for precision in [p for p in ("fp32", "int8") if p in self.models]:
            for stem, name in self.models[precision].items():
                target = name.removesuffix(".onnx") + ".ort-extended.onnx"
                optimize_for_ort(self.folder / name, self.folder / target)
                exact = precision == "fp32"
                reference = TorchReference(self.separators[stem]) if exact else None
                self._check_runs(self.folder / target, reference=reference, batch_independent=exact)
                self.optimized.setdefault(precision, {})[stem] = target

    def prove(self, audio: ParityAudio, max_sdr_loss: float, force: bool) -> None:
        """Parity with PyTorch on `audio`, written to parity.json/.md, then the gates (see parity.gate)."""
        graphs = {p: {s: self.folder / name for s, name in stems.items()} for p, stems in self.models.items()}
        report = measure_parity(self.separators, graphs, audio)
        report["ort_runs"] = self.runs
        failures = gate(report, max_sdr_loss)
        reduced = [f"{p} {problem}" for p, problems in failures.items() if p != "fp32" for problem in problems]
        report["forced"] = force and bool(reduced)
        # In the manifest too: the runtime chooses a reduced precision for you only where it passed.
        self.provenance["export"]["passed_gate"] = [
            precision for precision, problems in failures.items() if not problems
        ]
        write_parity(self.folder, report)
        if failures["fp32"]:
            raise ExportError("fp32 graphs differ from PyTorch: " + "; ".join(failures["fp32"]))
        if reduced and not force:
            raise ExportError("refusing to write: " + "; ".join(reduced) + " (force to write anyway)")

    def write_manifest(self) -> None:
        manifest = Manifest(
            stems=list(self.separators),
            models=self.models,
            ort_optimized=self.optimized,
            fused=self.fused,
            provenance=self.provenance,
            **bundle_facts(self.config),
        )
        manifest.files = {
            path.relative_to(self.folder).as_posix(): sha256_file(path)
            for path in sorted(self.folder.rglob("*"))
            if path.is_file() and path.name != MANIFEST_FILE
        }
        (self.folder / MANIFEST_FILE).write_text(manifest.to_json() + "\n")

    def _export(self, graph: torch.nn.Module, name: str, stems: list[str], precision: str) -> Path:
        outputs = graph.stems if isinstance(graph, FusedGraph) else [OUTPUT_NAME, CODES_NAME]
        metadata = graph_metadata(self.config, self.provenance, stems=stems, precision=precision)
        path = export_onnx(graph, self.folder / name, outputs, hop_length=self.config.hop_length, metadata=metadata)
        check_model(path)
        return path

    def _check_runs(self, path: Path, **options) -> None:
        label = path.relative_to(self.folder).as_posix()
        self.runs += check_runs(path, self.config.hop_length, label=label, **options)


def _set_metadata(path: Path, key: str, value: str) -> None:
    model = onnx.load(str(path))
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
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


def graph_metadata(config: VQVAEConfig, provenance: dict, *, stems: list[str], precision: str) -> dict:
    """A graph's metadata_props: the bundle facts, its stem(s) (`unmix.stem` for one-stem graphs)."""
    return {
        "unmix.format": "unmix-bundle-graph",
        **({"unmix.stem": stems[0]} if len(stems) == 1 else {"unmix.stems": stems}),
        "unmix.precision": precision,
        **{f"unmix.{key}": value for key, value in bundle_facts(config).items()},
        "unmix.input_name": INPUT_NAME,
        "unmix.output_name": OUTPUT_NAME,
        "unmix.codes_name": CODES_NAME,
        "unmix.config": config.to_dict(),
        "unmix.provenance": provenance,
    }


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
    configs = {s.mixture_encoder.config for s in separators.values()} | {
        s.stem_decoder.config for s in separators.values()
    }
    if config is None:
        if len(configs) != 1:
            raise ExportError("the separators were built from different configs; pass config= explicitly")
        config = configs.pop()
    for stem, separator in separators.items():
        for part in (separator.mixture_encoder, separator.stem_decoder):
            if (part.config.hop_length, part.config.emb_width) != (config.hop_length, config.emb_width):
                raise ExportError(f"stem {stem!r}: its model's hop or embedding width differs from the config's")
    return config


def _graphs_reference(paths: dict[str, Path]) -> Reference:
    """Per-stem graphs' `stem` outputs under the stem names: the reference for a fused graph."""
    sessions = {stem: cpu_session(path) for stem, path in paths.items()}
    return lambda mixture, _: {stem: s.run([OUTPUT_NAME], {INPUT_NAME: mixture})[0] for stem, s in sessions.items()}
