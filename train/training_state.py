"""What a run needs beyond its weights to continue exactly: live weights and buffers (the codebook's
EMA statistics k_sum/k_elem included), the optimizer's moments and the weight averages.

Stored beside a checkpoint's model as `training_state.safetensors` (tensors) and
`training_state.json` (everything else); never pickles. Random number generators need no saving:
every step reseeds them from (seed, step, rank), see trainer.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .checkpoint import CheckpointError
from .optim import ParameterEMA

TENSORS_FILE = "training_state.safetensors"
JSON_FILE = "training_state.json"


def _module_state(module: nn.Module) -> dict[str, Tensor]:
    """Parameters and every buffer, persistent or not."""
    return dict(module.named_parameters()) | dict(module.named_buffers())


def _optimizer_tensors_and_rest(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def state_writer(
    step: int, module: nn.Module, optimizer: torch.optim.Optimizer, ema: ParameterEMA
) -> Callable[[Path], None]:
    """A function that writes the training state into a checkpoint folder (for write_checkpoint)."""

    def write(folder: Path) -> None:
        optimizer_tensors, optimizer_rest = _optimizer_tensors_and_rest(optimizer)
        tensors = (
            {f"module.{name}": value for name, value in _module_state(module).items()}
            | {f"ema.{name}": value for name, value in ema.state_dict().items()}
            | optimizer_tensors
        )
        save_file({key: value.detach().contiguous().cpu() for key, value in tensors.items()}, folder / TENSORS_FILE)
        (folder / JSON_FILE).write_text(json.dumps({"step": step, "optimizer": optimizer_rest}, indent=2))

    return write


def load_training_state(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, ema: ParameterEMA) -> dict:
    """Restore what `state_writer` saved; returns the JSON part (with its `step`)."""
    if not (folder / TENSORS_FILE).is_file() or not (folder / JSON_FILE).is_file():
        raise CheckpointError(f"{folder}: no training state ({TENSORS_FILE}, {JSON_FILE}) to resume from")
    info = json.loads((folder / JSON_FILE).read_text())
    tensors = load_file(folder / TENSORS_FILE)
    live = _module_state(module)
    saved = {key.removeprefix("module."): value for key, value in tensors.items() if key.startswith("module.")}
    if set(saved) != set(live):
        raise CheckpointError(f"{folder}: the training state does not match the model being trained")
    with torch.no_grad():
        for name, value in saved.items():
            live[name].copy_(value)
    ema.load_state_dict({key.removeprefix("ema."): value for key, value in tensors.items() if key.startswith("ema.")})
    entries: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            entries.setdefault(int(index), {})[name] = value
    for index, scalars in info["optimizer"]["scalars"].items():
        entries.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": entries, "param_groups": info["optimizer"]["param_groups"]})
    return info
