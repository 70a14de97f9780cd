"""Training side of unmix: the PyTorch model, checkpoints, data, losses and the two training phases."""

from .checkpoint import Checkpoint, CheckpointError, build_encoder, build_vqvae, read_checkpoint, write_checkpoint
from .config import PAPER, TINY, VQVAEConfig, resolve_config
from .model import VQVAE, Decoder, Encoder, FourStemSeparator, StemSeparator

__all__ = [
    "PAPER", "TINY", "VQVAE", "Checkpoint", "CheckpointError", "Decoder", "Encoder", "FourStemSeparator",
    "StemSeparator", "VQVAEConfig", "build_encoder", "build_vqvae", "read_checkpoint", "resolve_config",
    "write_checkpoint",
]
