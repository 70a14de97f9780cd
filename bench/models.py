"""The PyTorch separators a benchmark compares against, and the bundle exported from them.

Without a trained bundle the benchmark uses randomly initialised separators of a chosen config: the
time a dense convolutional network takes does not depend on its weight values, so speed is measured
faithfully, while quality numbers on such a model are meaningless (and labelled so).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch

from unmix.runtime.manifest import STEMS, read_manifest, sha256_file
from unmix.train.checkpoint import WEIGHTS_FILE
from unmix.train.config import VQVAEConfig
from unmix.train.model import VQVAE, Encoder, StemSeparator

RANDOM_WEIGHTS_NOTE = (
    "randomly initialised weights (speed does not depend on weight values; quality numbers are meaningless)"
)


def random_separator(config: VQVAEConfig, seed: int) -> StemSeparator:
    """A separator with random ME and SD and a codebook drawn from ME's outputs (Jukebox's `init_k`).

    The codebook rows come from ME's outputs on unit white noise, four frames per code, so the codes
    are distinct rather than tiled near-copies: near-equidistant codes would make fp32 rounding decide
    the argmin, and the exporter's exact code-agreement gate would (rightly) refuse the graph.
    """
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        vqvae = VQVAE(config)
        mixture_encoder = Encoder(config)
        noise = torch.randn(1, 1, 4 * config.codebook_size * config.hop_length)
        with torch.no_grad():
            rows = mixture_encoder(noise).permute(0, 2, 1).reshape(-1, config.emb_width)
        vqvae.codebook.init_k(rows)
    finally:
        torch.random.set_rng_state(generator_state)
    return StemSeparator.from_vqvae(vqvae, mixture_encoder).eval()


def random_separators(config: VQVAEConfig, stems: tuple[str, ...] = STEMS, seed: int = 0) -> dict[str, StemSeparator]:
    """One `random_separator` per stem, seeded by `seed` and the stem's name (so any subset of stems
    rebuilds the same weights, in another process too)."""
    # torch's CPU generator keeps 32 bits of a seed
    return {stem: random_separator(config, (seed * 1_000_003 + zlib.crc32(stem.encode())) % 2**32) for stem in stems}


def torch_separators(spec: dict, stems: list[str] | tuple[str, ...]) -> dict[str, StemSeparator]:
    """The PyTorch separators a worker process rebuilds from a JSON-able `spec`.

    `{"config": {...}, "seed": n}`: random weights as `random_separators` makes them (the same weights
    the bundle was exported from); `{"separators": {stem: path}}`: our phase-2 runs or checkpoints.
    """
    if "separators" in spec:
        from unmix.export.sources import separator_from_run

        return {stem: separator_from_run(spec["separators"][stem], stem)[0] for stem in stems}
    if "config" in spec:
        return random_separators(VQVAEConfig.from_dict(spec["config"]), tuple(stems), spec.get("seed", 0))
    raise ValueError(f"unknown PyTorch model spec {sorted(spec)}")


def export_random_bundle(
    config: VQVAEConfig, out_dir: Path, precisions: tuple[str, ...] = ("fp32",), seed: int = 0, config_name: str = ""
) -> Path:
    """Export `random_separators(config)` as a bundle with the requested precisions (fp32 always).

    int8 is calibrated on chunks of the synthetic song. The export's SDR-loss gate is forced: on random
    weights the SDR against the true stems means nothing, so it cannot tell a good int8 model from a bad
    one; the bundle's parity report still states code agreement and SNR against PyTorch.
    """
    from unmix.export import export_bundle
    from unmix.export.audio import synthetic_audio

    calibration = None
    parity = synthetic_audio(config.sample_rate, config.hop_length, segments=1, seconds=1.0)  # the bench checks more
    if "int8" in precisions:
        song = synthetic_audio(config.sample_rate, config.hop_length, segments=8, seconds=2.0)
        calibration = [mixture.mean(axis=0) for mixture in song.mixtures]
    provenance = {
        "weights": RANDOM_WEIGHTS_NOTE,
        "seed": seed,
        "config": config_name or config.to_dict(),
        "by": "unmix-bench",
    }
    separators = random_separators(config, STEMS, seed)
    return export_bundle(
        separators,
        out_dir,
        provenance=provenance,
        config=config,
        parity_audio=parity,
        int8_calibration=calibration,
        fp16="fp16" in precisions,
        force=True,
        overwrite=True,
    )


def bundle_config(bundle: Path) -> VQVAEConfig:
    """The model config an exported bundle records in its graphs' metadata (`unmix.config`)."""
    import onnx

    manifest = read_manifest(bundle, verify=False)
    path = bundle / next(iter(manifest.models["fp32"].values()))
    metadata = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
    if "unmix.config" not in metadata:
        raise ValueError(f"{path}: no unmix.config in the graph's metadata; cannot rebuild the PyTorch reference")
    return VQVAEConfig.from_dict(json.loads(metadata["unmix.config"]))


def provenance_checkpoints(bundle: Path) -> dict[str, str] | None:
    """The phase-2 checkpoints a bundle was exported from, as its manifest's provenance records them, when
    every one is still there (relative paths from the working folder) with the recorded sha256; else None."""
    manifest = read_manifest(bundle, verify=False)
    sources = manifest.provenance.get("sources")
    if not isinstance(sources, dict):
        return None
    found = {}
    for stem in manifest.stems:
        info = (sources.get(stem) or {}).get("checkpoint") or {}
        weights = Path(info.get("path", "")) / WEIGHTS_FILE
        if info.get("role") != "separator" or not weights.is_file() or sha256_file(weights) != info.get("sha256"):
            return None
        found[stem] = info["path"]
    return found
