"""The PyTorch paths the runtime is measured against: `PaperStylePath` infers chunk by chunk as the paper's code
does (the reference for speed); `exact_separate` gives what the model computes on a whole signal (the reference
for quality and fidelity).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from unmix.runtime.chunking import ChunkPlan
from unmix.train.model import StemSeparator

PAPER_CHUNK = 393216  # samples: Jukebox's and the paper's sequence length (8.92 s at 44.1 kHz)

TORCH_VARIANTS = ("eager-fp32", "eager-fp16", "cudagraph-fp16", "compile-fp16")


class TorchStem(nn.Module):
    """ME and SD in `dtype`, the nearest-code search in fp32 (as the exported fp16 graphs do): mixture (1, 1, T) →
    (stem, codes)."""

    def __init__(self, separator: StemSeparator, dtype: torch.dtype = torch.float32):
        super().__init__()
        separator = separator if dtype == torch.float32 else copy.deepcopy(separator)
        self.mixture_encoder = separator.mixture_encoder.to(dtype)
        self.codebook = separator.codebook.float()
        self.stem_decoder = separator.stem_decoder.to(dtype)
        self.dtype = dtype
        self.hop = separator.mixture_encoder.config.hop_length

    def forward(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        mixture = mixture[..., : mixture.shape[-1] // self.hop * self.hop]
        codes = self.codebook.quantise(self.mixture_encoder(mixture.to(self.dtype)).float())
        return self.stem_decoder(self.codebook.dequantise(codes).to(self.dtype)).float(), codes


ChunkFn = Callable[[Tensor], tuple[Tensor, Tensor]]


class PaperStylePath:
    """One stem, inferred chunk by chunk as the paper does, by one of the `TORCH_VARIANTS`.

    As the paper's `predict_channel.py` (spec §5.4): one stem at a time, the mono mixture cut into non-overlapping
    `PAPER_CHUNK`-sample chunks (the last one is the remainder), batch 1, eager fp32, each chunk's output
    zero-padded to the chunk's length, the chunks concatenated. One difference: the paper ran the whole
    `VQVAE.forward`, which also computes the training losses and throws them away; here only ME → nearest code → SD
    runs, so this path is, if anything, faster than the paper's code. On CUDA the same path also runs in fp16:
    eager, replayed as a CUDA graph, and through `torch.compile`.

    `__call__(mono)` maps a mono mixture (frames,) float32 to the stem (frames,) float32;
    `last_codes` holds the codes of the chunks of the last call, concatenated.
    """

    def __init__(
        self, separator: StemSeparator, device: str = "cpu", variant: str = "eager-fp32", chunk: int = PAPER_CHUNK
    ):
        if variant not in TORCH_VARIANTS:
            raise ValueError(f"unknown PyTorch variant {variant!r}; choose from {', '.join(TORCH_VARIANTS)}")
        self.device = torch.device(device)
        if variant != "eager-fp32" and self.device.type != "cuda":
            raise ValueError(f"PyTorch {variant} is a CUDA variant; on {device} only eager-fp32 runs")
        self.variant = variant
        self.chunk = chunk
        self.hop = separator.mixture_encoder.config.hop_length
        dtype = torch.float32 if variant == "eager-fp32" else torch.float16
        self.model = TorchStem(separator.eval(), dtype).to(self.device).eval()
        self.static_shape = variant in ("cudagraph-fp16", "compile-fp16")
        self.run_chunk: ChunkFn = self._build(variant)
        self.last_codes: np.ndarray | None = None

    def _build(self, variant: str) -> ChunkFn:
        if variant == "compile-fp16":
            return torch.compile(self.model, dynamic=False)
        if variant == "cudagraph-fp16":
            with torch.inference_mode():
                return _cuda_graph(self.model, torch.zeros(1, 1, self.chunk, device=self.device))
        return self.model

    @torch.inference_mode()
    def __call__(self, mono: np.ndarray) -> np.ndarray:
        frames = mono.shape[0]
        stem, codes = np.zeros(frames, np.float32), []
        for start in range(0, frames, self.chunk):
            piece = torch.from_numpy(np.ascontiguousarray(mono[start : start + self.chunk], dtype=np.float32))
            length = piece.shape[0]
            if length < self.hop:  # the encoder needs one hop; the paper's code crashed here instead
                continue
            # The CUDA-graph and compiled variants need one static shape: the last, shorter chunk is zero-padded
            # to a full chunk (at a full chunk's cost) and cropped after.
            if self.static_shape and length < self.chunk:
                piece = torch.nn.functional.pad(piece, (0, self.chunk - length))
            out, chunk_codes = self.run_chunk(piece.view(1, 1, -1).to(self.device))
            kept = length // self.hop * self.hop  # the paper zero-pads the last < hop samples
            stem[start : start + kept] = out.view(-1)[:kept].cpu().numpy()  # the copy to the host waits for the GPU
            codes.append(chunk_codes.view(-1)[: length // self.hop].cpu().numpy())
        self.last_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        return stem


def _cuda_graph(model: nn.Module, static_input: Tensor) -> ChunkFn:
    """Capture `model` on `static_input`'s shape; calls copy the input in and replay the graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):  # warm-up on a side stream before capture, as CUDA graphs require
            model(static_input)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_output = model(static_input)

    def replay(mixture: Tensor) -> tuple[Tensor, Tensor]:
        static_input.copy_(mixture)
        graph.replay()
        return static_output[0].clone(), static_output[1].clone()

    return replay


@torch.inference_mode()
def exact_separate(
    separator: StemSeparator, signal: np.ndarray, device: str = "cpu", chunk_seconds: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """One stem of `signal` (items, frames), exactly as one whole-signal forward pass would give it.

    The signal is zero-padded to a multiple of the hop (as the runtime's reference is) and run in
    overlap-save windows with the receptive-field context (the runtime's `ChunkPlan`), items as the batch, so
    memory stays bounded on long songs. Returns the stem (items, frames) and its codes (items, frames // hop).
    """
    config = separator.mixture_encoder.config
    hop = config.hop_length
    plan = ChunkPlan(max(1, round(chunk_seconds * config.sample_rate / hop)) * hop, config.context_samples(), hop)
    items, frames = signal.shape
    padded = np.zeros((items, plan.padded_length(frames)), np.float32)
    padded[:, :frames] = signal
    stem, codes = np.zeros_like(padded), np.zeros((items, padded.shape[1] // hop), np.int64)
    separator = separator.eval().to(device)
    for window in plan.finish(0, frames):
        out, window_codes = separator(torch.from_numpy(padded[:, None, window.start : window.stop]).to(device))
        keep = slice(window.keep_start - window.start, window.keep_stop - window.start)
        stem[:, window.keep_start : window.keep_stop] = out[:, 0, keep].cpu().numpy()
        codes[:, window.keep_start // hop : window.keep_stop // hop] = (
            window_codes[:, keep.start // hop : keep.stop // hop].cpu().numpy()
        )
    return stem[:, :frames], codes[:, : frames // hop]
