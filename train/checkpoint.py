"""Reading and writing VQ-VAE checkpoints: Jukebox's and the paper's torch pickles, and our safetensors
folders. Whatever the format, a `Checkpoint` holds the level-0 weights under Jukebox's key names.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unmix.runtime.atomic import atomic_folder

from .config import PAPER, VQVAEConfig
from .model import VQVAE, Encoder

ENCODER_PREFIX = "encoders.0."
DECODER_PREFIX = "decoders.0."
CODEBOOK_KEY = "bottleneck.level_blocks.0.k"
PARTS = {"encoder": ENCODER_PREFIX, "decoder": DECODER_PREFIX, "codebook": CODEBOOK_KEY}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model."""


# Where Jukebox and the paper's two packages define Hyperparams, a dict subclass that checkpoints
# pickle under 'hps' (the paper renamed the package). We read it back as a plain dict, so the file
# loads without Jukebox installed and without unpickling any other class.
_HPARAMS_CLASSES = [f"{package}.hparams.Hyperparams" for package in ("jukebox", "unmix", "unmix_encoder")]


class _TrustedUnpickler(pickle.Unpickler):
    """Full unpickling (runs code!), with Jukebox's Hyperparams mapped to a plain dict."""

    def find_class(self, module: str, name: str):
        if f"{module}.{name}" in _HPARAMS_CLASSES:
            return dict
        return super().find_class(module, name)


class _TrustedPickleModule:
    Unpickler = _TrustedUnpickler
    load = pickle.load
    __name__ = "pickle"


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch ≥ 1.6) or a pickle stream (the legacy tar-less format)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _load_pickle(path: Path, trust_pickle: bool) -> object:
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint (neither a zip archive nor a pickle)")
    # Annotated with safe_globals' own element type: list is invariant, so list[tuple[type[dict], str]] is refused.
    safe: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [(dict, name) for name in _HPARAMS_CLASSES]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: the pickle holds objects beyond tensors and plain data; loading it could run code. "
                f"If you trust the file, pass --trust-pickle (trust_pickle=True). Detail: {str(error).splitlines()[0]}"
            ) from None
    warnings.warn(f"{path}: unpickling with trust_pickle=True; this can execute code from the file", stacklevel=3)
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TrustedPickleModule)


@dataclass
class Checkpoint:
    """A checkpoint's level-0 weights under Jukebox key names, with what is known about it."""

    format: str
    path: Path
    state: dict[str, Tensor]
    config: VQVAEConfig = PAPER
    step: int | None = None
    meta: dict = field(default_factory=dict)
    total_keys: int = 0

    @property
    def parts(self) -> list[str]:
        """Which of encoder, decoder and codebook the checkpoint holds."""
        return [part for part, prefix in PARTS.items() if any(key.startswith(prefix) for key in self.state)]

    def part_state(self, part: str) -> dict[str, Tensor]:
        """The weights of one part, with the part's prefix removed."""
        prefix = PARTS[part]
        if part == "codebook":
            return {"k": self.state[CODEBOOK_KEY]} if CODEBOOK_KEY in self.state else {}
        return {key[len(prefix) :]: value for key, value in self.state.items() if key.startswith(prefix)}

    def parameter_counts(self) -> dict[str, int]:
        return {part: sum(t.numel() for t in self.part_state(part).values()) for part in self.parts}


def _strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key.removeprefix("module."): value for key, value in state.items()}


def _is_level0(key: str) -> bool:
    return key.startswith((ENCODER_PREFIX, DECODER_PREFIX)) or key == CODEBOOK_KEY


def _classify_pickle(path: Path, payload: object) -> Checkpoint:
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path}: not a Jukebox-style checkpoint (expected a dict with a 'model' state dict)")
    state = _strip_module_prefix(payload["model"])
    if any(key.startswith(("encoders.1.", "decoders.1.")) for key in state):
        kind = "jukebox-official"
    elif any(key.startswith(DECODER_PREFIX) for key in state):
        kind = "unmix-phase1"
    elif any(key.startswith(ENCODER_PREFIX) for key in state):
        kind = "unmix-phase2"
    else:
        raise CheckpointError(f"{path}: no level-0 VQ-VAE keys ({ENCODER_PREFIX}*, {DECODER_PREFIX}*) in 'model'")
    level0 = {key: value.float() for key, value in state.items() if _is_level0(key)}
    if kind != "jukebox-official" and len(level0) != len(state):
        extra = sorted(set(state) - set(level0))
        raise CheckpointError(f"{path}: unexpected keys for a {kind} checkpoint: {extra[:5]}")
    step = payload.get("step")
    hps = dict(payload["hps"]) if isinstance(payload.get("hps"), dict) else {}
    return Checkpoint(kind, path, level0, PAPER, int(step) if step is not None else None, {"hps": hps}, len(state))


def _read_unmix(folder: Path) -> Checkpoint:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} without its {CONFIG_FILE}")
    info = json.loads(config_path.read_text())
    state = load_file(folder / WEIGHTS_FILE)
    config = VQVAEConfig.from_dict(info["model"])
    return Checkpoint("unmix", folder, state, config, info.get("step"), info, len(state))


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Checkpoint:
    """Read any supported checkpoint, recognising its format:

      jukebox-official  Jukebox's `vqvae.pth.tar`: {'hps', 'model', 'opt', 'step'}, three levels of
                        which level 0 (211 keys) is kept;
      unmix-phase1      the paper's stem VQ-VAE checkpoints: exactly the 211 level-0 keys;
      unmix-phase2      the paper's mixture-encoder checkpoints: the 104 `encoders.0.*` keys;
      unmix             ours: a folder with `model.safetensors` (same key names) and `config.json`.

    Keys may carry DataParallel's `module.` prefix; old (tar) and zip torch formats both load.
    """
    path = Path(path)
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        return _read_unmix(path)
    if path.suffix == ".safetensors" and path.is_file():
        return _read_unmix(path.parent)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    try:
        payload = _load_pickle(path, trust_pickle)
    except CheckpointError:
        raise
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint: {error}") from None
    return _classify_pickle(path, payload)


def load_strict(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """Load `state` into `module`, failing with every missing, unexpected and mis-shaped key named."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:4])}{' …' if len(items) > 4 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if items
    ]
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def build_vqvae(checkpoint: Checkpoint) -> VQVAE:
    """A VQ-VAE with the checkpoint's encoder, codebook and decoder (all three required)."""
    missing = [part for part in PARTS if part not in checkpoint.parts]
    if missing:
        raise CheckpointError(f"{checkpoint.path}: a {checkpoint.format} checkpoint without {', '.join(missing)}")
    vqvae = VQVAE(checkpoint.config)
    load_strict(vqvae, checkpoint.state, f"{checkpoint.path} ({checkpoint.format})")
    return vqvae


def build_encoder(checkpoint: Checkpoint) -> Encoder:
    """The checkpoint's encoder alone (for example the ME of a paper phase-2 checkpoint)."""
    if "encoder" not in checkpoint.parts:
        raise CheckpointError(f"{checkpoint.path}: a {checkpoint.format} checkpoint without an encoder")
    encoder = Encoder(checkpoint.config)
    load_strict(encoder, checkpoint.part_state("encoder"), f"{checkpoint.path} encoder")
    return encoder


def write_checkpoint(
    folder: str | Path,
    state: dict[str, Tensor],
    config: VQVAEConfig,
    info: dict,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write our format atomically: `model.safetensors` + `config.json` in a new folder.

    The folder appears only once both files are complete (write to a temporary sibling, then rename).
    `extra`, if given, writes more files into the unfinished folder so that they appear together with
    the weights (a training run's optimizer state).
    """
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        save_file({key: value.detach().contiguous().cpu() for key, value in state.items()}, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps({"format": "unmix", "model": config.to_dict(), **info}, indent=2))
        if extra is not None:
            extra(tmp)
    return folder
