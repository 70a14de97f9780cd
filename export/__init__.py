"""unmix.export: trained separators → validated ONNX deploy bundles (and int8, fp16, TensorRT)."""

from .bundle import export_bundle
from .checks import ExportError
from .graph import FusedGraph, NearestCode, StemGraph

__all__ = ["ExportError", "FusedGraph", "NearestCode", "StemGraph", "export_bundle"]
