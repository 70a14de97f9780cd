"""Training side of unmix: the PyTorch model, checkpoints, data, losses and the two training phases."""

from .checkpoint import Checkpoint, CheckpointError, build_encoder, build_vqvae, read_checkpoint, write_checkpoint
from .config import PAPER, TINY, VQVAEConfig, resolve_config
from .data import SOURCES, STEMS, CorpusError, Song, find_songs, split_songs
from .metrics import scaled_mixture, sdr
from .model import VQVAE, Decoder, Encoder, FourStemSeparator, StemSeparator
from .options import OptionsError, TrainOptions
from .phases import train_phase1, train_phase2
from .sampling import ChunkSampler
from .trainer import TrainingInterrupted

__all__ = [
    "PAPER",
    "SOURCES",
    "STEMS",
    "TINY",
    "VQVAE",
    "Checkpoint",
    "CheckpointError",
    "ChunkSampler",
    "CorpusError",
    "Decoder",
    "Encoder",
    "FourStemSeparator",
    "OptionsError",
    "Song",
    "StemSeparator",
    "TrainOptions",
    "TrainingInterrupted",
    "VQVAEConfig",
    "build_encoder",
    "build_vqvae",
    "find_songs",
    "read_checkpoint",
    "resolve_config",
    "scaled_mixture",
    "sdr",
    "split_songs",
    "train_phase1",
    "train_phase2",
    "write_checkpoint",
]
