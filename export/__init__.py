"""unmix.export: trained separators → validated ONNX deploy bundles (and int8, fp16, TensorRT).

export_bundle(separators, out_dir, ...)      the library entry point (unmix-export is a thin CLI on it)
separator_from_run / separator_from_vqvae     separators from our runs or from foreign checkpoints
load_parity_audio / calibration_chunks        audio for the parity proof and for int8 calibration
build_bundle_engines                          TensorRT engines for a bundle (untested: no GPU here)
"""

from .audio import ParityAudio, calibration_chunks, load_parity_audio, synthetic_audio
from .bundle import export_bundle
from .checks import ExportError
from .graph import FusedGraph, NearestCode, StemGraph
from .sources import find_checkpoint, separator_from_run, separator_from_vqvae
from .tensorrt_engines import build_bundle_engines

__all__ = [
    "ExportError",
    "FusedGraph",
    "NearestCode",
    "ParityAudio",
    "StemGraph",
    "build_bundle_engines",
    "calibration_chunks",
    "export_bundle",
    "find_checkpoint",
    "load_parity_audio",
    "separator_from_run",
    "separator_from_vqvae",
    "synthetic_audio",
]
