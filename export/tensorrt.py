"""`unmix-export --trt`: TensorRT engines for a bundle's fp16 graphs, in the bundle's engine cache.

UNTESTED: written without access to an NVIDIA GPU or TensorRT; see runtime/engine_cache.py, which
holds the (torch-free) key, lookup and build logic that the runtime shares.
"""

from __future__ import annotations

from pathlib import Path

from unmix.runtime.engine_cache import ENGINE_DIR, Profile, build_engine, default_profiles, engine_key, find_engine
from unmix.runtime.manifest import read_manifest

from .checks import ExportError

TRT_PRECISION = "fp16"  # the graphs with explicit fp16 casts and an fp32 vq island


def build_bundle_engines(
    bundle: str | Path,
    *,
    cache_dir: str | Path | None = None,
    profiles: tuple[Profile, ...] | None = None,
    device: int = 0,
) -> dict[str, Path]:
    """Build (or find) one engine per stem from the bundle's fp16 graphs; returns stem → engine path."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if TRT_PRECISION not in manifest.models:
        raise ExportError(f"{bundle}: no {TRT_PRECISION} graphs to build TensorRT engines from (export with --fp16)")
    profiles = profiles or default_profiles(
        hop_length=manifest.hop_length, context_samples=manifest.context_samples, sample_rate=manifest.sample_rate
    )
    cache_dir = Path(cache_dir) if cache_dir is not None else bundle / ENGINE_DIR
    engines = {}
    for stem, name in manifest.models[TRT_PRECISION].items():
        key = engine_key(manifest.files[name], TRT_PRECISION, profiles, device)
        engines[stem] = find_engine(cache_dir, stem, key) or build_engine(bundle / name, cache_dir, stem, key)
    return engines
