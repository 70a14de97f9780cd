"""The deployment graphs as PyTorch modules written for export: ME → nearest code → SD.

The nearest-code block sits under the `vq` module, so its ONNX nodes are named `/vq/...`: the fp32 island that fp16
and int8 conversion leave alone.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from unmix.train.model import StemSeparator

VQ_SCOPE = "/vq/"  # in the ONNX node names of the distance/argmin/gather block (also under fused branches)


def is_vq_node(node_name: str) -> bool:
    """Whether an exported node belongs to the fp32 distance/argmin/gather island."""
    return VQ_SCOPE in node_name


class NearestCode(nn.Module):
    """Embeddings (N, C, T') → (code vectors (N, C, T'), codes (N, T') int64).

    The training model's bottleneck (`train/bottleneck.py`) computes ‖x‖² − 2·x·kᵀ + ‖k‖² on flattened rows and
    takes `min`; exported as is, that becomes ReduceMin + ArgMin over a reshaped tensor. Here the same choice is
    written the way ONNX and TensorRT like it, on 3-D tensors, so the graph has no shape arithmetic:

        distances = ‖e‖² − 2 · x · Eᵀ     (‖e‖² a constant; ‖x‖² dropped: it does not move the argmin)
        codes     = ArgMin(distances)     (first index on ties, as torch.min)
        vectors   = Gather(Eᵀ, codes)     (one codebook initializer serves both MatMul and Gather)
    """

    # Registered buffers, declared so that type checkers see Tensors rather than nn.Module.__getattr__'s union.
    codebook_t: Tensor
    code_norms: Tensor

    def __init__(self, codebook: Tensor):
        super().__init__()
        codebook = codebook.detach().float()
        self.register_buffer("codebook_t", codebook.t().contiguous())  # (C, K)
        # Same arithmetic as the training bottleneck's ‖k‖², so the constants match bit for bit.
        self.register_buffer("code_norms", codebook.pow(2).sum(-1))  # (K,)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        distances = self.code_norms - 2 * (x.transpose(1, 2) @ self.codebook_t)  # (N, T', K)
        codes = distances.argmin(-1)
        vectors = self.codebook_t[:, codes].transpose(0, 1)  # Gather on axis 1: (C, N, T') → (N, C, T')
        return vectors, codes


class StemGraph(nn.Module):
    """One stem: mixture (N, 1, T) → (stem (N, 1, T), codes (N, T / hop)), T a multiple of the hop (the graph does
    not pad or crop; the runtime pads).

    With `half=True` the encoder and decoder run in float16 (for GPUs) while input, outputs and the
    `vq` block stay float32: the casts are explicit in the exported graph, which is what TensorRT's
    strongly typed networks need (its FP16 builder flag is deprecated since 10.12).
    """

    def __init__(self, separator: StemSeparator, half: bool = False):
        super().__init__()
        self.dtype = torch.float16 if half else torch.float32
        # Copies, so exporting never changes the caller's modules (dtype, mode).
        self.mixture_encoder = copy.deepcopy(separator.mixture_encoder).to(self.dtype).eval()
        self.vq = NearestCode(separator.codebook.k)
        self.stem_decoder = copy.deepcopy(separator.stem_decoder).to(self.dtype).eval()

    def forward(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        vectors, codes = self.vq(self._from_compute(self.mixture_encoder(self._to_compute(mixture))))
        return self._from_compute(self.stem_decoder(self._to_compute(vectors))), codes

    # Casts only in the fp16 graph (the tracer records even a float32 → float32 cast as a Cast node).
    def _to_compute(self, x: Tensor) -> Tensor:
        return x.half() if self.dtype == torch.float16 else x

    def _from_compute(self, x: Tensor) -> Tensor:
        return x.float() if self.dtype == torch.float16 else x


class FusedGraph(nn.Module):
    """Several stems in one graph: mixture → one output per stem (named after the stem)."""

    def __init__(self, separators: dict[str, StemSeparator], half: bool = False):
        super().__init__()
        self.stems = list(separators)
        self.branches = nn.ModuleList(StemGraph(separator, half) for separator in separators.values())

    def forward(self, mixture: Tensor) -> tuple[Tensor, ...]:
        return tuple(branch(mixture)[0] for branch in self.branches)
