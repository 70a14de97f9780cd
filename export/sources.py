"""Where separators come from: our training runs and checkpoints, foreign VQ-VAE/encoder files, or a bundle.

Each stem's files are named by `paths_per_stem`; `separator_from_run`, `separator_from_vqvae` and
`separator_from_bundle` build the separator from them and record where it came from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from unmix.runtime.manifest import STEMS, Manifest, sha256_file
from unmix.train.bottleneck import BottleneckBlock
from unmix.train.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    CheckpointError,
    build_encoder,
    build_vqvae,
    load_strict,
    read_checkpoint,
)
from unmix.train.config import VQVAEConfig
from unmix.train.model import Decoder, Encoder, StemSeparator

from .checks import ExportError

SEPARATOR_ROLE = "separator"


def paths_per_stem(values: Sequence[str], stems: Sequence[str], option: str) -> dict[str, Path]:
    """`stem=PATH` pairs (one per stem), one PATH with `{stem}` in it, or one PATH shared by all stems: each stem's
    path, for the option named `option`."""
    if any("=" in value for value in values):
        pairs = dict(value.split("=", 1) for value in values if "=" in value)
        if len(pairs) != len(values):
            raise ExportError(f"{option}: mix of stem=PATH pairs and plain paths; give one pair per stem")
        if set(pairs) != set(stems):
            raise ExportError(f"{option}: pairs name {sorted(pairs)}, but the stems to export are {list(stems)}")
        return {stem: Path(pairs[stem]) for stem in stems}
    if len(values) != 1:
        raise ExportError(f"{option}: give one PATH, a PATH with {{stem}}, or one stem=PATH pair per stem")
    return {stem: Path(values[0].replace("{stem}", stem)) for stem in stems}


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder that `path` stands for.

    A checkpoint folder (model.safetensors + config.json) is itself; a run folder stands for the
    checkpoint inside it (`RUN/checkpoint/`), or, when it holds several, the one with the highest step.
    """
    path = Path(path)
    if (path / WEIGHTS_FILE).is_file():
        return path
    if not path.is_dir():
        raise ExportError(f"{path}: no such checkpoint or run folder")
    found = [weights.parent for weights in path.glob(f"*/{WEIGHTS_FILE}") if (weights.parent / CONFIG_FILE).is_file()]
    if not found:
        raise ExportError(f"{path}: neither a checkpoint ({WEIGHTS_FILE} + {CONFIG_FILE}) nor a run folder holding one")
    return max(found, key=lambda folder: (json.loads((folder / CONFIG_FILE).read_text()).get("step") or 0, folder.name))


def _read(path: Path, trust_pickle: bool, config: VQVAEConfig | None) -> Checkpoint:
    if path.is_dir():
        path = find_checkpoint(path)
    try:
        checkpoint = read_checkpoint(path, trust_pickle=trust_pickle)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    if config is not None and checkpoint.format == "unmix" and config != checkpoint.config:
        raise ExportError(f"{path}: the given config differs from the checkpoint's own")
    if config is not None and checkpoint.format != "unmix":
        # Foreign files carry no model config (read_checkpoint assumes the paper's); use the given one.
        checkpoint = dataclasses.replace(checkpoint, config=config)
    return checkpoint


def _describe(checkpoint: Checkpoint) -> dict:
    weights = checkpoint.path / WEIGHTS_FILE if checkpoint.path.is_dir() else checkpoint.path
    info = {"path": str(checkpoint.path), "format": checkpoint.format, "sha256": sha256_file(weights)}
    info |= {key: checkpoint.meta[key] for key in ("role", "stem") if key in checkpoint.meta}
    if checkpoint.step is not None:
        info["step"] = checkpoint.step
    return info


def _build(build, checkpoint: Checkpoint):
    try:
        return build(checkpoint)
    except CheckpointError as error:
        hint = (
            "" if checkpoint.format == "unmix" else " (foreign checkpoints carry no config: pass the model's --config)"
        )
        raise ExportError(f"{error}{hint}") from None


def _check_stem(checkpoint: Checkpoint, stem: str) -> None:
    trained_on = checkpoint.meta.get("stem")  # a stem, or "mixture"/"all" for a generic VQ-VAE
    if trained_on in STEMS and trained_on != stem:
        raise ExportError(f"{checkpoint.path}: trained for {trained_on}, not {stem}")


def separator_from_run(path: str | Path, stem: str) -> tuple[StemSeparator, dict]:
    """A phase-2 separator from our checkpoint or run folder, and its provenance.

    The checkpoint must have `"role": "separator"`: it holds ME as `encoders.0`, SD and the codebook.
    """
    checkpoint = _read(find_checkpoint(path), False, None)
    role = checkpoint.meta.get("role")
    if role != SEPARATOR_ROLE:
        raise ExportError(
            f"{checkpoint.path}: a {role or 'role-less'} checkpoint, not a phase-2 separator; "
            "export a VQ-VAE with --vqvae (its own encoder then serves as ME)"
        )
    _check_stem(checkpoint, stem)
    separator = StemSeparator.from_vqvae(_build(build_vqvae, checkpoint)).eval()
    return separator, {"checkpoint": _describe(checkpoint)} | _training_facts(checkpoint)


def separator_from_vqvae(
    vqvae_path: str | Path,
    encoder_path: str | Path | None,
    stem: str,
    *,
    trust_pickle: bool = False,
    config: VQVAEConfig | None = None,
) -> tuple[StemSeparator, dict]:
    """Codebook + SD from a VQ-VAE file, ME from `encoder_path` or else the VQ-VAE's own encoder.

    The VQ-VAE may be Jukebox's `vqvae.pth.tar`, the paper's phase-1 pickles, or ours; the encoder the paper's
    phase-2 pickles, or ours.
    """
    vqvae_checkpoint = _read(Path(vqvae_path), trust_pickle, config)
    _check_stem(vqvae_checkpoint, stem)
    vqvae = _build(build_vqvae, vqvae_checkpoint)
    provenance: dict[str, dict | str] = {"vqvae": _describe(vqvae_checkpoint)}  # "encoder" may be a note instead
    encoder = None
    if encoder_path is not None:
        encoder_checkpoint = _read(Path(encoder_path), trust_pickle, config or vqvae_checkpoint.config)
        _check_stem(encoder_checkpoint, stem)
        encoder = _build(build_encoder, encoder_checkpoint)
        if encoder.config != vqvae.config:
            raise ExportError(f"{encoder_path}: its encoder's config differs from the VQ-VAE's ({vqvae_path})")
        provenance["encoder"] = _describe(encoder_checkpoint)
    else:
        provenance["encoder"] = "the VQ-VAE's own encoder (as the paper's --freeze jukebox)"
    return StemSeparator.from_vqvae(vqvae, encoder).eval(), provenance


def _training_facts(checkpoint: Checkpoint) -> dict:
    keys = ("training", "validation", "provenance")
    return {key: checkpoint.meta[key] for key in keys if checkpoint.meta.get(key)}


def separator_from_bundle(path: str | Path, manifest: Manifest, stem: str) -> tuple[StemSeparator, dict]:
    """The separator that the fp32 graph of `stem` in the bundle at `path` (its manifest `manifest`, read and
    verified by the caller: `read_manifest`) was exported from, and its provenance: the graph (path, sha256) and
    what the graph's own metadata says it was exported from.

    The graph's initializers keep the PyTorch names (`mixture_encoder.*`, `stem_decoder.*`, and the codebook
    transposed as `vq.codebook_t`) and its metadata the model config, so the separator is rebuilt exactly: a way
    to derive int8 or fp16 graphs, or a refinement fit, for a bundle whose checkpoints one does not hold.
    """
    folder = Path(path)
    graph_file = manifest.models.get("fp32", {}).get(stem)
    if graph_file is None:
        raise ExportError(f"{folder}: the bundle has no fp32 graph for {stem!r} (it has {manifest.stems})")
    graph = onnx.load(str(folder / graph_file))
    meta = {entry.key: entry.value for entry in graph.metadata_props}
    if meta.get("unmix.stem") != stem or "unmix.config" not in meta:
        raise ExportError(f"{folder / graph_file}: not an unmix fp32 graph of {stem!r} (its metadata says otherwise)")
    config = VQVAEConfig.from_dict(json.loads(meta["unmix.config"]))
    weights = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.graph.initializer}
    codebook = BottleneckBlock(config.codebook_size, config.emb_width, config.codebook_mu, config.revival_threshold)
    separator = StemSeparator(Encoder(config), codebook, Decoder(config))
    state = {name: value for name, value in weights.items() if not name.startswith("vq.")}
    if "vq.codebook_t" not in weights:
        raise ExportError(f"{folder / graph_file}: no codebook (vq.codebook_t) among its initializers")
    state["codebook.k"] = weights["vq.codebook_t"].t().contiguous()
    try:
        load_strict(separator, state, str(folder / graph_file))
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    source = json.loads(meta.get("unmix.provenance", "{}")).get("sources", {}).get(stem, {})
    bundle = {"path": str(folder), "graph": graph_file, "sha256": manifest.files[graph_file]}
    return separator.eval(), {"bundle": bundle} | source
