"""A bundle's graphs run directly on ONNX Runtime, for the outputs the runtime does not return: the codes.

Torch-free, so runtime rows of the benchmark stay lean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from unmix.runtime.manifest import read_manifest

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class BundleGraphs:
    """One ONNX Runtime session per stem of a bundle at one precision, on "cpu" or "cuda[:N]"."""

    def __init__(
        self, bundle: str | Path, precision: str, stems: list[str], device: str = "cpu", threads: int | None = None
    ):
        bundle = Path(bundle)
        self.manifest = read_manifest(bundle, verify=False)
        kind, _, index = device.partition(":")
        provider = PROVIDERS[kind]
        if provider not in ort.get_available_providers():
            raise RuntimeError(f"this onnxruntime ({ort.__version__}) has no {provider}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if kind == "cpu":
            # A run here is one whole excerpt, not a runtime window: with ORT's defaults each session kept an arena
            # sized to it plus, from its second run on, the memory pattern's block (3.6 GiB per fp32 stem of the
            # default bundle on a 393216-sample stereo excerpt), and the stems × precisions of `unmix-bench sdr`
            # ran out of memory. Without both, a run's memory (~2 GiB) is freed when it returns; same outputs.
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = threads
        providers = [provider] if kind == "cpu" else [(provider, {"device_id": int(index or 0)})]
        models = self.manifest.models[precision]
        if kind == "cpu":  # the files the runtime runs there: the exporter's offline-optimised copies, if any
            models = models | self.manifest.ort_optimized.get(precision, {})
        self.sessions = {
            stem: ort.InferenceSession(str(bundle / models[stem]), options, providers=providers) for stem in stems
        }

    def __call__(self, batch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each stem on `batch` (items, frames): {stem: (audio (items, frames), codes (items, frames // hop))}.

        The batch is zero-padded to a multiple of the hop (as the runtime's whole-signal reference is) and
        the outputs cropped back.
        """
        manifest, frames = self.manifest, batch.shape[1]
        hop = manifest.hop_length
        padded = np.pad(batch.astype(np.float32), ((0, 0), (0, -frames % hop)))[:, None, :]
        outputs = {}
        for stem, session in self.sessions.items():
            audio, codes = session.run([manifest.output_name, manifest.codes_name], {manifest.input_name: padded})
            outputs[stem] = (audio[:, 0, :frames], codes[:, : frames // hop])
        return outputs
