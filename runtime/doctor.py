"""`unmix doctor`: what this machine can run, and what to install for what it cannot.

Every probe is read-only and tolerant: a missing tool is a finding, never a crash.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import platform
from importlib import metadata

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

from .backends import GPU_INSTALL_HINT
from .gpus import GpuQueryError, nvidia_gpus
from .manifest import BundleError
from .separator import DEFAULT_BUNDLE, resolve_bundle

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "ort-nightly")
CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
)
CUDA_LIBRARIES = ("libcudart.so.12", "libcublas.so.12", "libcudnn.so.9")


def report() -> str:
    """The whole report as text."""
    lines: list[str] = []
    advice: list[str] = []
    _versions(lines, advice)
    _cpu(lines, advice)
    _gpu(lines, advice)
    _bundle(lines, advice)
    lines.append("")
    lines.extend(["to do:", *(f"  - {item}" for item in advice)] if advice else ["nothing to fix"])
    return "\n".join(lines)


def _row(lines: list[str], key: str, value: object) -> None:
    lines.append(f"  {key:<22} {value}")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _versions(lines: list[str], advice: list[str]) -> None:
    lines.append("versions:")
    _row(lines, "unmix", _version("unmix") or "not installed (running from a checkout)")
    _row(lines, "python", f"{platform.python_version()} on {platform.platform()}")
    _row(lines, "numpy", np.__version__)
    installed = {name: _version(name) for name in ORT_DISTRIBUTIONS}
    installed = {name: version for name, version in installed.items() if version}
    _row(
        lines,
        "onnxruntime",
        f"{ort.__version__} ({', '.join(f'{n} {v}' for n, v in installed.items()) or 'unknown wheel'})",
    )
    if len(installed) > 1:
        advice.append(
            f"several ONNX Runtime wheels are installed ({', '.join(installed)}); they overwrite each other: "
            "uninstall all of them, then install the one you need"
        )
    _row(lines, "soundfile", f"{sf.__version__} (libsndfile {sf.__libsndfile_version__})")
    formats = sf.available_formats()
    _row(lines, "formats", ", ".join(f for f in ("WAV", "FLAC", "OGG", "MP3") if f in formats))
    if "MP3" not in formats:
        advice.append("this libsndfile cannot read or write MP3 (needs 1.1+): pip install -U soundfile")
    _row(lines, "soxr", soxr.__version__)
    _row(lines, "providers", ", ".join(ort.get_available_providers()))
    _openvino(lines, advice)


def _openvino(lines: list[str], advice: list[str]) -> None:
    """OpenVINO: what `--backend auto` runs on a CPU when it is there, and whether it has bf16 here."""
    from .openvino_backend import available, native_bf16

    if not available():
        _row(lines, "openvino", "not installed (the CPU runs ONNX Runtime fp32)")
        advice.append("the openvino backend separates several times faster on most CPUs: pip install 'unmix[openvino]'")
        return
    precisions = (
        "fp32, int8, bf16 (native: the default)"
        if native_bf16()
        else "fp32, int8 (no native bf16 on this CPU: int8 is the default where a bundle's int8 passed its gate)"
    )
    _row(lines, "openvino", f"{_version('openvino')}: {precisions}")
    from .openvino_cache import default_cache_dir, describe

    _row(lines, "openvino cache", describe(default_cache_dir()))


def _cpu(lines: list[str], advice: list[str]) -> None:
    lines.append("cpu:")
    info = _read("/proc/cpuinfo")
    model = _first_field(info, ("model name", "Hardware", "CPU part")) or platform.processor() or "unknown"
    _row(lines, "model", model)
    physical = _physical_cores(info)
    _row(lines, "cores", f"{os.cpu_count()} logical" + (f", {len(physical)} physical" if physical else ""))
    flags = set((_first_field(info, ("flags", "Features")) or "").split())
    present = [flag for flag in CPU_FLAGS if flag in flags]
    _row(lines, "features", ", ".join(present) or "unknown")
    if flags and not ({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"} & flags):
        advice.append(
            "this CPU has no int8 dot-product instructions (VNNI/dotprod): int8 on ONNX Runtime may not be faster "
            "(OpenVINO's int8 still is on AVX2; see the README's Status)"
        )


def _physical_cores(info: str) -> set[tuple[str, str]]:
    cores, package = set(), "0"
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            cores.add((package, value.strip()))
    return cores


def _gpu(lines: list[str], advice: list[str]) -> None:
    lines.append("gpu:")
    gpus = _nvidia_smi()
    _row(lines, "nvidia gpus", "; ".join(gpus) if gpus else "none found (no nvidia-smi, or it lists no GPU)")
    cuda_provider = "CUDAExecutionProvider" in ort.get_available_providers()
    _row(lines, "onnxruntime cuda", "available" if cuda_provider else "not in this onnxruntime build")
    if cuda_provider:
        if hasattr(ort, "preload_dlls"):
            try:  # loads CUDA/cuDNN from the nvidia-* pip wheels when they are installed
                ort.preload_dlls()
            except Exception:
                pass
        missing = [name for name in CUDA_LIBRARIES if not _loadable(name)]
        _row(lines, "cuda libraries", "all found" if not missing else f"missing {', '.join(missing)}")
        if missing:
            advice.append(
                f"onnxruntime-gpu cannot find {', '.join(missing)}: pip install 'onnxruntime-gpu[cuda,cudnn]' "
                "or install CUDA 12 and cuDNN 9 system-wide"
            )
    elif gpus:
        advice.append(f"an NVIDIA GPU is present but ONNX Runtime cannot use it: {GPU_INSTALL_HINT}")
    trt = _version("tensorrt") or (_module_version("tensorrt") if importlib.util.find_spec("tensorrt") else None)
    _row(lines, "tensorrt", trt or "not installed")
    if gpus and not trt:
        advice.append("for --backend trt: pip install 'unmix[trt]' (TensorRT 10)")


def _bundle(lines: list[str], advice: list[str]) -> None:
    lines.append("default model:")
    try:
        from .manifest import read_manifest

        manifest = read_manifest(resolve_bundle("default"), verify=True)
    except BundleError as error:
        _row(lines, "bundle", f"unusable: {error}")
        advice.append(f"no usable default model in {DEFAULT_BUNDLE}: pass --bundle PATH to `unmix separate`")
        return
    _row(lines, "bundle", f"{DEFAULT_BUNDLE} (checksums verified)")
    _row(lines, "stems", ", ".join(manifest.stems))
    _row(lines, "precisions", ", ".join(manifest.precisions))
    _row(lines, "sample rate", f"{manifest.sample_rate} Hz")


def _nvidia_smi() -> list[str]:
    """One line per GPU: index, name, compute capability, memory and driver; none where nvidia-smi lists none."""
    try:
        gpus = nvidia_gpus()
    except GpuQueryError:
        return []
    return [
        f"{gpu.index}, {gpu.name}, {gpu.compute_capability}, "
        f"{'? MiB' if gpu.memory_mib is None else f'{gpu.memory_mib} MiB'}, {gpu.driver}"
        for gpu in gpus
    ]


def _loadable(library: str) -> bool:
    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


def _module_version(name: str) -> str:
    try:
        return getattr(importlib.import_module(name), "__version__", "installed")
    except Exception as error:  # a broken install is itself the finding
        return f"installed but fails to import ({type(error).__name__})"


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _first_field(text: str, keys: tuple[str, ...]) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys and value.strip():
            return value.strip()
    return None
