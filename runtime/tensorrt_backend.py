"""The TensorRT backend: a bundle's graphs as TensorRT engines, from its engine cache or built on first use.

UNTESTED: written without an NVIDIA GPU or TensorRT (the development machine has neither). It follows
the TensorRT 10 Python API (Runtime, ICudaEngine, IExecutionContext.execute_async_v3) and NVIDIA's
cuda-python runtime bindings; engines, keys and the cache are `engine_cache.py`'s (shared with
`unmix-export --trt`). Nothing here runs unless `--backend trt` is asked for explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .engine_cache import ENGINE_DIR, EngineCacheError, cached_engine, default_profiles, import_tensorrt
from .engines import Device
from .errors import BackendError
from .manifest import Manifest

CUDA_PYTHON_HINT = "pip install 'unmix[trt]' (TensorRT and cuda-python)"


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendError(f"the TensorRT backend needs cuda-python: {CUDA_PYTHON_HINT}") from None
    return cudart


def _cache_dir(bundle: Path) -> Path:
    """The bundle's own engine folder if usable, else the user's cache (a bundle may sit in site-packages)."""
    own = bundle / ENGINE_DIR
    if (own.is_dir() and os.access(own, os.W_OK)) or (not own.exists() and os.access(bundle, os.W_OK)):
        return own
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unmix" / ENGINE_DIR


class TensorRTEngine:
    """One TensorRT engine per stem on one GPU; the batch is uploaded once and shared by the stems."""

    def __init__(self, bundle: Path, manifest: Manifest, paths: dict[str, Path], *, device: Device, precision: str):
        try:
            self.trt = import_tensorrt()
        except EngineCacheError as error:
            raise BackendError(str(error)) from None
        self.cudart = _import_cudart()
        self.stems = tuple(paths)
        (offline,) = profiles = default_profiles(
            hop_length=manifest.hop_length, context_samples=manifest.context_samples, sample_rate=manifest.sample_rate
        )
        self.max_items, self.max_time = offline.max[0], offline.max[2]
        self.device_index = device.index
        self._call(self.cudart.cudaSetDevice(device.index))
        self.stream = self._call(self.cudart.cudaStreamCreate())
        self.stream_handle = int(self.stream)  # TensorRT takes the raw cudaStream_t
        runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        cache = _cache_dir(bundle)
        self.contexts = {}
        for stem, path in paths.items():
            sha256 = manifest.files[path.relative_to(bundle).as_posix()]
            try:
                plan = cached_engine(path, sha256, cache, stem, precision, profiles, device.index)
            except EngineCacheError as error:
                raise BackendError(str(error)) from None
            engine = runtime.deserialize_cuda_engine(plan.read_bytes())
            if engine is None:
                raise BackendError(
                    f"{plan}: TensorRT cannot load this engine (see its log above); delete it to rebuild"
                )
            context = engine.create_execution_context()
            context.set_optimization_profile_async(0, self.stream_handle)  # profile 0: offline windows
            self.contexts[stem] = (engine, context)
        self.input_name, self.output_name = manifest.input_name, manifest.output_name
        self.codes_name, self.hop = manifest.codes_name, manifest.hop_length
        self.buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, bytes)
        self.description = f"TensorRT {self.trt.__version__} on {device} (untested backend), {precision}"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        items, _, time = batch.shape
        if time > self.max_time:
            raise BackendError(
                f"the TensorRT engines take windows of at most {self.max_time} samples; use a smaller --chunk"
            )
        outputs = {stem: np.empty_like(batch) for stem in self.stems}
        h2d, d2h = (
            self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        for first in range(0, items, self.max_items):
            part = np.ascontiguousarray(batch[first : first + self.max_items])
            mixture = self._buffer(self.input_name, part.nbytes)
            self._call(self.cudart.cudaMemcpyAsync(mixture, part.ctypes.data, part.nbytes, h2d, self.stream))
            stem_buffer = self._buffer(self.output_name, part.nbytes)
            codes_buffer = self._buffer(self.codes_name, len(part) * (time // self.hop) * 8)
            for stem, (_engine, context) in self.contexts.items():
                context.set_input_shape(self.input_name, part.shape)
                context.set_tensor_address(self.input_name, mixture)
                context.set_tensor_address(self.output_name, stem_buffer)
                context.set_tensor_address(self.codes_name, codes_buffer)  # every output needs an address
                if not context.execute_async_v3(self.stream_handle):
                    raise BackendError(f"TensorRT failed to run the {stem} engine")
                target = outputs[stem][first : first + len(part)]
                self._call(self.cudart.cudaMemcpyAsync(target.ctypes.data, stem_buffer, part.nbytes, d2h, self.stream))
                self._call(self.cudart.cudaStreamSynchronize(self.stream))  # before the next stem reuses the buffer
        return outputs

    def close(self) -> None:
        """Wait for the stream, destroy the execution contexts and engines, free the device buffers and destroy
        the stream. Every step is tried; the first CUDA error is raised at the end. Closing again does nothing."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        buffers, self.buffers = self.buffers, {}
        errors: list[BackendError] = []

        def attempt(result) -> None:
            try:
                self._call(result)
            except BackendError as error:
                errors.append(error)

        attempt(self.cudart.cudaSetDevice(self.device_index))  # the buffers and stream belong to this device
        attempt(self.cudart.cudaStreamSynchronize(stream))  # nothing may still use the buffers
        while self.contexts:  # each context before its engine
            _stem, (engine, context) = self.contexts.popitem()
            del context
            del engine
        for pointer, _nbytes in buffers.values():
            attempt(self.cudart.cudaFree(pointer))
        attempt(self.cudart.cudaStreamDestroy(stream))
        if errors:
            raise errors[0]

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._call(self.cudart.cudaFree(pointer))
            pointer = self._call(self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def _call(self, result):
        """cuda-python returns (error, *values): raise on error, return the value."""
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise BackendError(f"CUDA error: {self.cudart.cudaGetErrorString(error)[1].decode()}")
        return values[0] if values else None
