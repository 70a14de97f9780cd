"""TensorRT engines for a bundle's graphs, without torch: cache keys, file names, lookup and building.

Shared by `unmix-export --trt`, which builds engines into a bundle, and the runtime, which loads them or builds them
on first use. An engine's key holds everything it depends on, so a lookup never returns a stale engine.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import write_atomically
from .chunking import OTHER_CHUNK_SECONDS
from .errors import UnmixError
from .gpus import GpuQueryError, NoNvidiaSmi, NvidiaGpu, nvidia_gpus

INSTALL_HINT = "pip install 'unmix[trt]' (TensorRT ≥ 10 for CUDA 12; needs an NVIDIA GPU and driver)"
ENGINE_DIR = "engines"  # a bundle's own engine cache, beside its manifest


class EngineCacheError(UnmixError, RuntimeError):
    """TensorRT or a GPU is missing, or an engine could not be built."""


@dataclass(frozen=True)
class Profile:
    """min/opt/max shapes of the `mixture` input, (batch, 1, time): kernels are tuned for opt."""

    name: str
    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]


def default_profiles(
    *,
    hop_length: int,
    context_samples: int,
    sample_rate: int,
    chunk_seconds: float = OTHER_CHUNK_SECONDS,
    max_batch: int = 16,
) -> tuple[Profile]:
    """The profiles of the runtime's overlap-save windows: windows of `chunk + 2·context` samples, up to
    `max_batch` items (windows × channels), for the separator's default chunk on backends other than OpenVINO.
    (The low-latency stream runs stateful models on OpenVINO only; a TensorRT profile for it would go here.)
    """
    chunk = max(1, round(chunk_seconds * sample_rate / hop_length)) * hop_length
    window = chunk + 2 * context_samples
    return (Profile("offline", (1, 1, hop_length), (max_batch, 1, window), (max_batch, 1, window)),)


def gpu_info(device: int = 0) -> NvidiaGpu:
    """Name, compute capability and driver of CUDA device `device` (after CUDA_VISIBLE_DEVICES)."""
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    if visible and device >= len(visible):
        raise EngineCacheError(f"no CUDA device {device}: CUDA_VISIBLE_DEVICES lists {len(visible)}")
    try:
        return nvidia_gpus(visible[device] if visible else str(device))[0]
    except NoNvidiaSmi:
        raise EngineCacheError(
            f"no NVIDIA driver found (nvidia-smi is missing): TensorRT needs an NVIDIA GPU; {INSTALL_HINT}"
        ) from None
    except GpuQueryError as error:
        raise EngineCacheError(f"no CUDA device {device}: {error}") from None


def import_tensorrt():
    """The tensorrt module, or a one-line error saying what to install."""
    try:
        import tensorrt
    except ImportError:
        raise EngineCacheError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise EngineCacheError(
            f"TensorRT {tensorrt.__version__} is too old (strongly typed networks need ≥ 10): {INSTALL_HINT}"
        )
    return tensorrt


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on: an engine is valid only for the exact ONNX file, GPU model and compute
    capability, TensorRT version, precision, optimisation profiles and builder settings it was built with, so a
    lookup under any other key never returns it."""

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    profiles: tuple[Profile, ...]
    tf32: bool = False  # off: TF32 would round the fp32 distance MatMul and flip codes
    optimization_level: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def file_stem(self, stem: str) -> str:
        sm = self.compute_capability.replace(".", "")
        return f"{stem}-{self.onnx_sha256[:8]}-sm{sm}-trt{self.tensorrt_version}-{self.precision}-{self.digest()[:12]}"


def engine_key(onnx_sha256: str, precision: str, profiles: tuple[Profile, ...], device: int = 0) -> EngineKey:
    """The key for building `onnx_sha256` now, on `device` with the installed TensorRT."""
    trt = import_tensorrt()
    gpu = gpu_info(device)
    return EngineKey(onnx_sha256, gpu.name, gpu.compute_capability, trt.__version__, precision, tuple(profiles))


def engine_path(cache_dir: str | Path, stem: str, key: EngineKey) -> Path:
    return Path(cache_dir) / f"{key.file_stem(stem)}.plan"


def find_engine(cache_dir: str | Path, stem: str, key: EngineKey) -> Path | None:
    """The cached engine for `key`, or None. The sidecar must hold exactly `key`: a file name alone
    (which carries only prefixes of the digests) is never trusted."""
    plan = engine_path(cache_dir, stem, key)
    sidecar = plan.with_suffix(".json")
    if not (plan.is_file() and sidecar.is_file()):
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return plan if recorded.get("key") == json.loads(json.dumps(key.to_dict())) else None


def build_engine(
    onnx_path: str | Path, cache_dir: str | Path, stem: str, key: EngineKey, workspace_bytes: int | None = None
) -> Path:
    """Build, serialize and cache the engine for `key`.

    UNTESTED: no machine with an NVIDIA GPU and TensorRT was available while this was written. The key, naming and
    lookup logic is tested on the CPU; this follows the TensorRT 10 Python API documentation (Builder, OnnxParser,
    IBuilderConfig, IOptimizationProfile, ITimingCache) but has never run. It writes:

        <cache>/<stem>-<onnx sha 8>-sm<cc>-trt<version>-<precision>-<key 12>.plan   the serialized engine
        <cache>/<same>.json                                                       its full key (sidecar)
        <cache>/timing-sm<cc>-trt<version>.cache                                 TensorRT's timing cache

    A strongly typed network takes each tensor's precision from the graph (the fp16 graphs carry
    explicit casts around their fp32 vq island), so no FP16 builder flag is set. The timing cache of
    this GPU and TensorRT version is loaded and saved back, which makes rebuilds fast and repeatable.
    Files appear atomically: a failed or killed build leaves no engine behind.
    """
    trt = import_tensorrt()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineCacheError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not key.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    config.builder_optimization_level = key.optimization_level
    input_name = network.get_input(0).name
    for shapes in key.profiles:  # profile index i in the engine is key.profiles[i]
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(profile)
    sm = key.compute_capability.replace(".", "")
    timing_path = cache_dir / f"timing-sm{sm}-trt{key.tensorrt_version}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineCacheError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    target = engine_path(cache_dir, stem, key)
    write_atomically(target, memoryview(plan))
    write_atomically(
        target.with_suffix(".json"), json.dumps({"key": key.to_dict(), "onnx": str(onnx_path)}, indent=2).encode()
    )
    write_atomically(timing_path, memoryview(config.get_timing_cache().serialize()))
    return target


def cached_engine(
    onnx_path: str | Path,
    onnx_sha256: str,
    cache_dir: str | Path,
    stem: str,
    precision: str,
    profiles: tuple[Profile, ...],
    device: int = 0,
    build: bool = True,
) -> Path:
    """The engine for this graph on this machine: from the cache, or built now when `build`."""
    key = engine_key(onnx_sha256, precision, profiles, device)
    found = find_engine(cache_dir, stem, key)
    if found is not None:
        return found
    if not build:
        raise EngineCacheError(f"no cached TensorRT engine for {stem} ({precision}) on {key.gpu_name}")
    return build_engine(onnx_path, cache_dir, stem, key)
