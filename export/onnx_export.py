"""torch → ONNX: opset 17, dynamic batch and time, facts stored in the model's metadata_props."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from unmix.runtime.manifest import CODES_NAME, INPUT_NAME

OPSET = 17  # TensorRT 8.6 tops out at 17, TensorRT 10 reads 9–20; nothing newer is needed (no STFT)


def export_onnx(
    module: nn.Module,
    path: str | Path,
    output_names: list[str],
    *,
    hop_length: int,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Export `module` (mixture (N, 1, T) → outputs) with dynamic batch and time axes.

    Audio outputs (N, 1, T) share the input's axis names; a `codes` output is (N, T / hop).
    `metadata` values are stored as strings (JSON for non-strings) in the model's metadata_props.
    """
    path = Path(path)
    example = torch.zeros(1, 1, 8 * hop_length)
    axes = {INPUT_NAME: {0: "batch", 2: "time"}}
    for name in output_names:
        axes[name] = {0: "batch", 1: "frames"} if name == CODES_NAME else {0: "batch", 2: "time"}
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it emits opset 17 directly
        # in well under a second, where dynamo exports 18 and down-converts, far slower, same graph.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=output_names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    set_metadata(model, metadata or {})
    onnx.save(model, str(path))
    return path


def set_metadata(model: onnx.ModelProto, metadata: dict[str, object]) -> None:
    """Replace the model's metadata_props with `metadata` (values as strings, JSON for non-strings)."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
