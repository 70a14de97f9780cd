"""Model configuration: the level-0 VQ-VAE's shape as data, so tests can use tiny models."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VQVAEConfig:
    """Hyper-parameters of one Jukebox level-0 VQ-VAE (encoder, codebook, decoder).

    The defaults are the paper's: Jukebox's `vqvae` hparams with multiplier 2 at level 0,
    i.e. width 64, depth 8, three stride-2 downsamplings (hop 8), 2048 codes of width 64.
    """

    width: int = 64
    depth: int = 8
    down_t: int = 3
    stride_t: int = 2
    emb_width: int = 64
    codebook_size: int = 2048
    dilation_growth_rate: int = 3
    codebook_mu: float = 0.99
    revival_threshold: float = 1.0
    sample_rate: int = 44100

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return self.stride_t**self.down_t

    def dilations(self) -> list[int]:
        """Encoder dilations of one Resnet1D stack; the decoder uses them reversed."""
        return [self.dilation_growth_rate**j for j in range(self.depth)]

    def encoder_receptive_field(self) -> int:
        """Input samples that influence one latent frame of the encoder."""
        field, jump = 1, 1
        resnet_span = sum(2 * d for d in self.dilations())  # each block: conv k3 with dilation d
        for _ in range(self.down_t):
            field += (2 * self.stride_t - 1) * jump  # down conv, kernel 2·stride
            jump *= self.stride_t
            field += resnet_span * jump
        return field + 2 * jump  # output conv k3

    def decoder_receptive_field(self) -> int:
        """Latent frames that influence one output sample of the decoder."""
        return -(-self._decoder_field_samples() // self.hop_length)

    def _decoder_field_samples(self) -> int:
        # Walk from the output back to the latent grid, measuring in output samples.
        field, jump = 3, 1  # output conv k3
        resnet_span = sum(2 * d for d in self.dilations())
        for _ in range(self.down_t):
            jump *= self.stride_t
            field += jump  # ConvTranspose k=2s: one output sees 2 adjacent inputs
            field += resnet_span * jump
        return field + 2 * jump  # input conv k3 on the latent grid

    def context_samples(self) -> int:
        """Samples of context needed on each side for an exact mixture → stem output.

        Encoder and decoder are both centred (padding equals half the kernel span), so each
        side needs half of each field; rounded up to whole latent frames plus one frame for
        the strided convolutions' phase.
        """
        hop = self.hop_length
        half = (self.encoder_receptive_field() + self._decoder_field_samples()) // 2
        return (-(-half // hop) + 1) * hop

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VQVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VQ-VAE config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> VQVAEConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


PAPER = VQVAEConfig()
TINY = VQVAEConfig(width=16, depth=3, emb_width=16, codebook_size=64)
PRESETS: dict[str, VQVAEConfig] = {"paper": PAPER, "tiny": TINY}


def resolve_config(name_or_path: str) -> VQVAEConfig:
    """A preset name (`paper`, `tiny`) or a JSON file of `VQVAEConfig` fields."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"config {name_or_path!r} is neither a preset {sorted(PRESETS)} nor a JSON file")
    return VQVAEConfig.load(path)
