"""Where the graphs run: ONNX Runtime on the CPU or a CUDA GPU, or TensorRT engines.

An `Engine` maps one batch of mono windows (items, 1, time) to each chosen stem's output. Asking for
something this machine or bundle cannot do raises `BackendError`; nothing falls back silently.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .engines import Device, Engine
from .errors import BackendError
from .manifest import Manifest

if TYPE_CHECKING:
    import onnxruntime as ort

BACKENDS = ("auto", "ort", "openvino", "trt")
PRECISIONS = ("auto", "fp32", "int8", "fp16", "bf16")
# Precisions that run a bundle's fp32 graphs at another arithmetic (the backend converts them as it loads).
COMPUTED_PRECISIONS = {"bf16": "fp32"}
GPU_INSTALL_HINT = "pip uninstall -y onnxruntime && pip install 'unmix[gpu]' (onnxruntime-gpu with CUDA 12 and cuDNN 9)"


def open_engine(
    bundle: Path,
    manifest: Manifest,
    stems: list[str],
    *,
    device: Device,
    backend: str,
    precision: str,
    threads: int | None,
    spinning: bool,
) -> Engine:
    """The engine for `stems` of the bundle at `precision` on `device` through `backend`.

    backend "auto" is OpenVINO on a CPU where it is installed, else ONNX Runtime; `precision` is a resolved one
    (`Separator.from_bundle` resolves "auto" with `default_precision`, before it chooses the chunk).
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    backend = resolve_backend(backend, device, precision)
    stored = COMPUTED_PRECISIONS.get(precision, precision)
    if precision in COMPUTED_PRECISIONS and backend != "openvino":
        raise BackendError(f"{precision} runs on the openvino backend (--backend openvino), not on {backend}")
    if stored not in manifest.models:
        raise BackendError(
            f"the bundle has no {stored} models (it has {', '.join(manifest.precisions)}); choose --precision accordingly"
        )
    models = manifest.models[stored]
    if device.kind == "cpu" and backend == "ort":
        # The exporter's offline-optimised copies (CPU, EXTENDED level) load faster; parity-checked like the rest.
        models = models | manifest.ort_optimized.get(precision, {})
    paths = {stem: bundle / models[stem] for stem in stems}
    if backend == "trt":
        if device.kind != "cuda":
            raise BackendError("the TensorRT backend needs a GPU: use --device cuda[:N]")
        from .tensorrt_backend import TensorRTEngine  # imported only when asked for: tensorrt is an optional extra

        return TensorRTEngine(bundle, manifest, paths, device=device, precision=precision)
    if backend == "openvino":
        if device.kind != "cpu":
            raise BackendError("the openvino backend runs on the CPU: use --device cpu")
        from .openvino_backend import OpenVinoEngine  # an optional extra, imported only when used

        return OpenVinoEngine(paths, manifest, threads=threads, precision=precision)
    return OrtEngine(paths, manifest, device=device, threads=threads, spinning=spinning, precision=precision)


def resolve_backend(backend: str, device: Device, precision: str = "auto") -> str:
    """`auto` → "openvino" on a CPU where OpenVINO is installed, for the precisions it runs (it runs the graphs
    faster there, see the README's Speed section), else "ort"; any other name as it is. TensorRT is never
    chosen for you while untested."""
    if backend != "auto":
        return backend
    from .openvino_backend import PRECISIONS as OPENVINO_PRECISIONS
    from .openvino_backend import available

    runs_it = precision == "auto" or precision in OPENVINO_PRECISIONS
    return "openvino" if device.kind == "cpu" and runs_it and available() else "ort"


def default_precision(backend: str, manifest: Manifest) -> str:
    """On the openvino backend: bf16 where the CPU computes it natively (AMX, AVX512-BF16), else the bundle's int8
    graphs where they passed the exporter's SDR gate (`Manifest.passed_gate`), else fp32. fp32 elsewhere."""
    if backend == "openvino":
        from .openvino_backend import native_bf16

        if native_bf16():
            return "bf16"
        if "int8" in manifest.models and manifest.passed_gate("int8"):
            return "int8"
    return "fp32"


@functools.cache
def _shared_cpu_arena() -> None:
    """One CPU memory arena for all our sessions: the stems run one after another, so they can share the
    same working memory (one arena per session would hold one window's activations per stem)."""
    ort = _onnxruntime()
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 1, -1, -1))  # 1: grow only as requested


def _onnxruntime():
    """ONNX Runtime, imported when an engine needs it (about 25 MB that a run on OpenVINO does without)."""
    import onnxruntime

    return onnxruntime


def session_options(threads: int | None, spinning: bool, device: Device) -> ort.SessionOptions:
    options = _onnxruntime().SessionOptions()
    if device.kind == "cpu":
        _shared_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        # ORT's memory pattern pre-plans one block for all of a run's tensors: on the paper's model it nearly
        # doubled peak memory for no speed (README, Memory)
        options.enable_mem_pattern = False
    options.log_severity_level = 3  # ORT's warnings (unused initializers, …) are not the user's business
    if threads is not None:
        if threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one branch per graph: nothing to run in parallel across ops
    # Spinning threads wait for work at 100 % CPU between runs: fast on a dedicated machine, rude
    # inside a host application (a DAW, a server), so it is off unless the caller opts in.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OrtEngine:
    """One ONNX Runtime session per stem; on CUDA the batch is uploaded once and shared (I/O binding)."""

    def __init__(
        self,
        paths: dict[str, Path],
        manifest: Manifest,
        *,
        device: Device,
        threads: int | None,
        spinning: bool,
        precision: str,
    ):
        ort = _onnxruntime()
        self.stems = tuple(paths)
        self.device = device
        self.input_name, self.output_name = manifest.input_name, manifest.output_name
        provider = "CPUExecutionProvider" if device.kind == "cpu" else "CUDAExecutionProvider"
        if provider not in ort.get_available_providers():
            raise BackendError(
                f"this onnxruntime ({ort.__version__}) has no {provider}; to run on a GPU: {GPU_INSTALL_HINT}"
            )
        # On a GPU each session keeps its own memory arena; growing it only as requested keeps four of them small.
        cuda_options = {"device_id": device.index, "arena_extend_strategy": "kSameAsRequested"}
        providers: list = [provider] if device.kind == "cpu" else [(provider, cuda_options)]
        options = session_options(threads, spinning, device)
        self.sessions = {}
        for stem, path in paths.items():
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as error:  # ORT raises its own exception types for every failure
                raise BackendError(
                    f"{path.name}: onnxruntime cannot load it on {device}: {str(error).splitlines()[0]}"
                ) from None
            # ORT falls back to the CPU when the CUDA libraries fail to load: that is an error here.
            if session.get_providers()[0] != provider:
                raise BackendError(
                    f"onnxruntime could not start {provider} on {device} (CUDA/cuDNN libraries missing or "
                    f"mismatched); run `unmix doctor`"
                )
            self.sessions[stem] = session
        detail = f"{threads} threads" if device.kind == "cpu" and threads else str(device)
        self.description = f"onnxruntime {ort.__version__} {provider} ({detail}), {precision}"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.device.kind == "cpu":
            return {
                stem: session.run([self.output_name], {self.input_name: batch})[0]
                for stem, session in self.sessions.items()
            }
        mixture = _onnxruntime().OrtValue.ortvalue_from_numpy(
            batch, "cuda", self.device.index
        )  # one upload for all stems
        outputs = {}
        for stem, session in self.sessions.items():
            binding = session.io_binding()
            binding.bind_ortvalue_input(self.input_name, mixture)
            binding.bind_output(self.output_name, "cuda", self.device.index)  # codes stay unbound: not copied
            session.run_with_iobinding(binding)
            outputs[stem] = binding.copy_outputs_to_cpu()[0]
        return outputs

    def close(self) -> None:
        """Drop the sessions: ONNX Runtime frees a session's memory (its GPU arena on CUDA) once it is unreferenced."""
        self.sessions = {}
