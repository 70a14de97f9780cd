"""Jukebox's level-0 VQ-VAE, module for module, so its checkpoints load with their own key names.

Paper vocabulary, defined once here:
  SE  "stem encoder": the encoder of a VQ-VAE fine-tuned on one isolated stem (phase 1);
  SD  "stem decoder": that VQ-VAE's decoder, which turns stem codes into stem audio;
  ME  "mixture encoder": a second encoder trained so that ME(mixture) ≈ SE(stem) (phase 2).
Deployment runs ME → nearest code in SD's codebook → SD (`StemSeparator`).
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from .bottleneck import Bottleneck, BottleneckBlock
from .config import VQVAEConfig


class ResConv1DBlock(nn.Module):
    """x + conv1x1(relu(conv3_dilated(relu(x)))); no normalisation, residual scale 1."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(width, width, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(width, width, 1, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.model(x)


class Resnet1D(nn.Module):
    """`depth` residual blocks with dilations growth**j (reversed in the decoder)."""

    def __init__(self, config: VQVAEConfig, reverse_dilation: bool = False):
        super().__init__()
        dilations = config.dilations()
        if reverse_dilation:
            dilations = dilations[::-1]
        self.model = nn.Sequential(*(ResConv1DBlock(config.width, d) for d in dilations))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class EncoderConvBlock(nn.Module):
    """down_t × [Conv1d k=2s stride s, Resnet1D], then Conv1d k3 to the embedding width."""

    def __init__(self, config: VQVAEConfig, in_channels: int = 1):
        super().__init__()
        s, w = config.stride_t, config.width
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv1d(in_channels if i == 0 else w, w, 2 * s, s, s // 2), Resnet1D(config))
            for i in range(config.down_t)
        ]
        layers.append(nn.Conv1d(w, config.emb_width, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class DecoderConvBlock(nn.Module):
    """Conv1d k3 from the embedding, then down_t × [Resnet1D (reversed), ConvTranspose1d ×s]."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        s, w = config.stride_t, config.width
        layers: list[nn.Module] = [nn.Conv1d(config.emb_width, w, 3, 1, 1)]
        for i in range(config.down_t):
            # Jukebox widens the last upsampling to its `input_emb_width`, which is emb_width here.
            out = config.emb_width if i == config.down_t - 1 else w
            layers.append(
                nn.Sequential(Resnet1D(config, reverse_dilation=True), nn.ConvTranspose1d(w, out, 2 * s, s, s // 2))
            )
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Encoder(nn.Module):
    """Audio (N, 1, T) → embeddings (N, emb_width, T // hop). Keys `level_blocks.0.*` as Jukebox."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.level_blocks = nn.ModuleList([EncoderConvBlock(config)])

    def forward(self, x: Tensor) -> Tensor:
        return self.level_blocks[0](x)


class Decoder(nn.Module):
    """Embeddings (N, emb_width, T') → audio (N, 1, hop · T'). Keys `level_blocks.0.*`, `out.*`."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.level_blocks = nn.ModuleList([DecoderConvBlock(config)])
        self.out = nn.Conv1d(config.emb_width, 1, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.level_blocks[0](z))


def _crop_to_hop(x: Tensor, hop: int) -> Tensor:
    """Drop trailing samples so the length is a multiple of the hop (the encoder floors anyway)."""
    return x[..., : x.shape[-1] // hop * hop]


class VQVAE(nn.Module):
    """Encoder → codebook → decoder, with Jukebox's module names (`encoders.0`, `bottleneck`, `decoders.0`)."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList([Encoder(config)])
        self.decoders = nn.ModuleList([Decoder(config)])
        self.bottleneck = Bottleneck(
            BottleneckBlock(config.codebook_size, config.emb_width, config.codebook_mu, config.revival_threshold)
        )

    @property
    def encoder(self) -> Encoder:
        return cast(Encoder, self.encoders[0])  # ModuleList items are typed Module; __init__ put an Encoder there

    @property
    def decoder(self) -> Decoder:
        return cast(Decoder, self.decoders[0])  # ModuleList items are typed Module; __init__ put a Decoder there

    @property
    def codebook(self) -> BottleneckBlock:
        return self.bottleneck.block

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict]:
        """Reconstruct `x` (N, 1, T): returns x̂ (N, 1, hop·floor(T/hop)), commit loss, metrics."""
        x = _crop_to_hop(x, self.config.hop_length)
        _, quantised, commit_loss, metrics = self.bottleneck(self.encoder(x))
        return self.decoder(quantised), commit_loss, metrics


class StemSeparator(nn.Module):
    """The deployment path of one stem: ME → nearest code in SD's codebook → SD.

    Inputs are mono mixtures (N, 1, T); outputs the stem (N, 1, hop·floor(T/hop)) and its codes.
    """

    def __init__(self, mixture_encoder: Encoder, codebook: BottleneckBlock, stem_decoder: Decoder):
        super().__init__()
        self.mixture_encoder = mixture_encoder
        self.codebook = codebook
        self.stem_decoder = stem_decoder

    @classmethod
    def from_vqvae(cls, vqvae: VQVAE, mixture_encoder: Encoder | None = None) -> StemSeparator:
        """Use `vqvae`'s codebook and decoder, and `mixture_encoder` (default: the VQ-VAE's own encoder)."""
        return cls(mixture_encoder or vqvae.encoder, vqvae.codebook, vqvae.decoder)

    def forward(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        mixture = _crop_to_hop(mixture, self.mixture_encoder.config.hop_length)
        codes = self.codebook.quantise(self.mixture_encoder(mixture))
        return self.stem_decoder(self.codebook.dequantise(codes)), codes


class FourStemSeparator(nn.Module):
    """One `StemSeparator` per stem, applied to the same mixture."""

    def __init__(self, separators: dict[str, StemSeparator]):
        super().__init__()
        self.separators = nn.ModuleDict(separators)

    def forward(self, mixture: Tensor) -> dict[str, Tensor]:
        return {stem: separator(mixture)[0] for stem, separator in self.separators.items()}
