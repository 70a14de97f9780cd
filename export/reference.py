"""What the PyTorch model computes: the reference every exported graph is compared with."""

from __future__ import annotations

import numpy as np
import torch

from unmix.runtime.manifest import CODES_NAME, OUTPUT_NAME
from unmix.train.model import StemSeparator

from .ties import resolve_ties

EMBEDDING = "embedding"  # ME's output (N, T', C): what a tie is judged on


class TorchReference:
    """A `StemSeparator`'s outputs for mixture batches (N, 1, T), on the CPU in fp32 (the separator is
    put in eval mode and fp32)."""

    def __init__(self, separator: StemSeparator):
        self.separator = separator.float().eval()
        self.codebook = separator.codebook.k.detach().float().numpy()

    @torch.no_grad()
    def outputs(self, mixture: np.ndarray) -> dict[str, np.ndarray]:
        """`stem`, `codes` and `embedding`, computed as `StemSeparator.forward` does."""
        embedding = self.separator.mixture_encoder(torch.from_numpy(mixture))
        codes = self.separator.codebook.quantise(embedding)
        stem = self.separator.stem_decoder(self.separator.codebook.dequantise(codes))
        return {OUTPUT_NAME: stem.numpy(), CODES_NAME: codes.numpy(), EMBEDDING: embedding.transpose(1, 2).numpy()}

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """SD on the code vectors of `codes` (N, T')."""
        return self.separator.stem_decoder(self.separator.codebook.dequantise(torch.from_numpy(codes))).numpy()

    def resolved(self, raw: dict[str, np.ndarray], graph_codes: np.ndarray) -> tuple[dict[str, np.ndarray], int, int]:
        """The reference with fp32 ties taken as the graph chose them (see ties.py), the audio decoded
        from those codes; also the number of tie frames and of real disagreements."""
        codes, ties, real = resolve_ties(graph_codes, raw[CODES_NAME], raw[EMBEDDING], self.codebook)
        stem = raw[OUTPUT_NAME] if ties == 0 else self.decode(codes)
        return {OUTPUT_NAME: stem, CODES_NAME: codes}, ties, real

    def __call__(self, mixture: np.ndarray, graph_outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Expected outputs for a graph that produced `graph_outputs` (for `checks.check_runs`)."""
        expected, ties, _ = self.resolved(self.outputs(mixture), graph_outputs[CODES_NAME])
        return expected | {"tie_frames": np.array(ties)}
