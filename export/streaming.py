"""Streaming step graphs: a block of new samples in, the stem samples that became final out, state carried over.

The stem graph (ME → nearest code → SD) is a stack of convolutions, so it runs on a stream when every convolution
keeps the input history its next outputs need (cached convolutions, as RAVE's cached_conv): each input sample
passes each layer once, and the stream equals the stateless graph.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unmix.runtime.phases import phase_taps
from unmix.runtime.streaming import UNLIMITED, CachedLayer, StreamLayout
from unmix.train.model import ResConv1DBlock, StemSeparator

from .graph import NearestCode


class CachedConv(nn.Module):
    """A Conv1d run on [history, new frames]: (x (N, C, n), state (N, C, s)) → (out, next state).

    Each call computes:

        full  = [history, new frames]      history starts as the convolution's left zero padding
        out   = conv(full) without padding  every output whose inputs have all arrived
        state = full[stride · len(out):]    what the next outputs still need
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, *, stride: int, dilation: int, padding: int):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.dilation, self.padding = stride, dilation, padding

    @classmethod
    def of(cls, conv: nn.Conv1d) -> CachedConv:
        padding = conv.padding[0]
        assert isinstance(padding, int)  # the models build every Conv1d with integer padding, never "same"/"valid"
        return cls(conv.weight, conv.bias, stride=conv.stride[0], dilation=conv.dilation[0], padding=padding)

    @property
    def span(self) -> int:
        return (self.weight.shape[-1] - 1) * self.dilation + 1

    def forward(self, x: Tensor, state: Tensor, limit: Tensor) -> tuple[Tensor, Tensor]:
        full = torch.cat([state, x], -1)
        out = F.conv1d(full, self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        return only_valid(out, limit), full[..., out.shape[-1] * self.stride :]


def only_valid(out: Tensor, limit: Tensor) -> Tensor:
    """`out` (N, C, n) with frames from `limit` on set to zero: past the signal's end, where the stateless
    graph's next layer reads its zero padding."""
    return torch.where(torch.arange(out.shape[-1]) < limit, out, torch.zeros((), dtype=out.dtype))


def transposed_as_conv(conv: nn.ConvTranspose1d) -> CachedConv:
    """ConvTranspose1d(k=4, s=2, p=1) as a 3-tap convolution to its two output phases (`unmix.runtime.phases`):
    the same arithmetic, and it caches like any convolution (the phases are then interleaved)."""
    if (conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.output_padding[0]) != (4, 2, 1, 0):
        raise ValueError(f"only ConvTranspose1d(k=4, s=2, p=1) streams here, got {conv}")
    taps = torch.from_numpy(phase_taps(conv.weight.detach().numpy()))
    bias = None if conv.bias is None else torch.cat([conv.bias.detach(), conv.bias.detach()])
    return CachedConv(taps, bias, stride=1, dilation=1, padding=1)


def interleave(phases: Tensor) -> Tensor:
    """(N, 2·C, L) even/odd phases → (N, C, 2L) frames."""
    n, channels, length = phases.shape
    return phases.reshape(n, 2, channels // 2, length).permute(0, 2, 3, 1).reshape(n, channels // 2, 2 * length)


class CachedResBlock(nn.Module):
    """ResConv1DBlock on a stream; its state is the raw input history (2·dilation frames once warm).

    Its dilated convolution reads ReLU(history), and the skip path reads the same history, delayed by the dilation,
    so both branches stay aligned on one state.
    """

    def __init__(self, block: ResConv1DBlock):
        super().__init__()
        dilated, pointwise = block.model[1], block.model[3]
        self.dilation = dilated.dilation[0]
        self.dilated = CachedConv.of(dilated)
        self.pointwise = copy.deepcopy(pointwise)

    def forward(self, x: Tensor, state: Tensor, limit: Tensor) -> tuple[Tensor, Tensor]:
        full = torch.cat([state, x], -1)
        inner = F.conv1d(F.relu(full), self.dilated.weight, self.dilated.bias, dilation=self.dilation)
        count = inner.shape[-1]
        out = full[..., self.dilation : self.dilation + count] + self.pointwise(F.relu(inner))
        return only_valid(out, limit), full[..., count:]


class StreamingStemGraph(nn.Module):
    """One stem on a stream: (mixture block (N, 1, n), limits (layers,), *states) → (stem (N, 1, n'), *next states).

    `state_specs()` lists the layers (and their states, in argument order); `limits[i]` is how many of layer i's
    output frames in this call lie inside the signal (the runtime follows each layer's position with
    `unmix.runtime.streaming.StreamLayout`; a huge value while the end is unknown). `delay` is set by
    `measure_delay`. Build it from a `StemSeparator` (the deployment modules with trained weights).

    The nearest-code block is the stateless graph's own (`graph.NearestCode`, under `vq`: the fp32 island). Each
    layer returns fewer frames than it is given on the first call (its look-ahead) and as many afterwards, so the
    whole graph lags its input by `delay` samples: a stream's first call takes `delay + B` samples and returns B,
    and every later call of B samples (a multiple of the hop) returns B. The left edge is exactly the stateless
    graph's (the zeros in the history are its padding); past the right edge, `limits` zero what the stateless
    graph's next layer would read as zero padding.
    """

    def __init__(self, separator: StemSeparator):
        super().__init__()
        encoder_block = separator.mixture_encoder.level_blocks[0].model
        decoder_block = separator.stem_decoder.level_blocks[0].model
        self.encoder = nn.ModuleList()  # CachedConv / CachedResBlock in order
        for stage in list(encoder_block)[:-1]:
            down, resnet = stage[0], stage[1]
            self.encoder.append(CachedConv.of(down))
            self.encoder.extend(CachedResBlock(block) for block in resnet.model)
        self.encoder.append(CachedConv.of(encoder_block[-1]))
        self.vq = NearestCode(separator.codebook.k)
        self.decoder = nn.ModuleList([CachedConv.of(decoder_block[0])])
        self.upsamplers: list[int] = []  # decoder layer indices whose output is interleaved
        for stage in list(decoder_block)[1:]:
            resnet, up = stage[0], stage[1]
            self.decoder.extend(CachedResBlock(block) for block in resnet.model)
            self.upsamplers.append(len(self.decoder))
            self.decoder.append(transposed_as_conv(up))
        self.decoder.append(CachedConv.of(separator.stem_decoder.out))
        self.delay = 0

    def state_specs(self) -> list[CachedLayer]:
        """Every cached layer in argument order: its state's name and channels and its arithmetic."""
        specs = []
        for part, layers in (("encoder", self.encoder), ("decoder", self.decoder)):
            for index, layer in enumerate(layers):
                conv = layer.dilated if isinstance(layer, CachedResBlock) else layer
                assert isinstance(conv, CachedConv)  # encoder and decoder hold only CachedConv and CachedResBlock
                upsample = part == "decoder" and index in self.upsamplers
                specs.append(
                    CachedLayer(
                        f"state.{part}.{index}", conv.weight.shape[1], conv.padding, conv.span, conv.stride, upsample
                    )
                )
        return specs

    def initial_states(self, batch: int = 1) -> list[Tensor]:
        return [torch.from_numpy(state) for state in StreamLayout(self.state_specs()).initial_states(batch)]

    def forward(self, mixture: Tensor, limits: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        following = []
        x = mixture
        layers = [*self.encoder, *self.decoder]
        for index, (layer, state) in enumerate(zip(layers, states, strict=True)):
            if index == len(self.encoder):  # code vectors past the end would be read where the decoder pads
                x = only_valid(self.vq(x)[0], limits[index - 1])
            x, state = layer(x, state, limits[index])
            if index - len(self.encoder) in self.upsamplers:
                x = interleave(x)
            following.append(state)
        return (x, *following)


@torch.no_grad()
def measure_delay(graph: StreamingStemGraph, hop: int, context: int) -> int:
    """Samples the stream lags its input: a first call of n samples returns n − delay (n ≥ 2·context)."""
    first = -(-2 * context // hop) * hop
    unlimited = no_limits(graph)
    out = graph(torch.zeros(1, 1, first), unlimited, *graph.initial_states())[0]
    delay = first - out.shape[-1]
    again = graph(torch.zeros(1, 1, first + hop), unlimited, *graph.initial_states())[0]
    if first + hop - again.shape[-1] != delay:
        raise ValueError(f"the stream's delay is not constant ({delay}, then {first + hop - again.shape[-1]})")
    return delay


def no_limits(graph: StreamingStemGraph) -> Tensor:
    """Limits for a call that ends nowhere near the signal's end."""
    return torch.full((len(graph.state_specs()),), UNLIMITED, dtype=torch.int64)


def export_streaming_graph(graph: StreamingStemGraph, path, metadata: dict[str, object] | None = None):
    """Write `graph` as ONNX (opset 17): inputs `mixture` and the states, outputs `stem` and `next.<state>`,
    every batch and time axis dynamic."""
    import warnings
    from pathlib import Path

    import onnx

    from unmix.runtime.manifest import INPUT_NAME, OUTPUT_NAME

    from .onnx_export import OPSET, set_metadata

    path = Path(path)
    specs = graph.state_specs()
    inputs = [INPUT_NAME, LIMITS_NAME, *(spec.name for spec in specs)]
    outputs = [OUTPUT_NAME, *(next_state_name(spec.name) for spec in specs)]
    axes = {
        name: {0: "batch", 2: f"time_{index}"} for index, name in enumerate(inputs + outputs) if name != LIMITS_NAME
    }
    example = (torch.zeros(1, 1, 2 * graph.delay + 64), no_limits(graph), *graph.initial_states())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            graph.eval(),
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    set_metadata(model, metadata or {})
    onnx.save(model, str(path))
    return path


LIMITS_NAME = "limits"


def next_state_name(name: str) -> str:
    """The output that carries state input `name` to the next call."""
    return "next." + name


def separator_from_graph(path) -> StemSeparator:
    """The PyTorch separator whose weights an exported stateless stem graph holds (its initializers keep the
    module names, its metadata the config): how a bundle without its checkpoints gains streaming graphs."""
    import json

    import onnx
    from onnx import numpy_helper

    from unmix.train.config import VQVAEConfig
    from unmix.train.model import VQVAE

    model = onnx.load(str(path))
    meta = {entry.key: entry.value for entry in model.metadata_props}
    if "unmix.config" not in meta:
        raise ValueError(f"{path}: not an unmix stem graph (no unmix.config metadata)")
    config = VQVAEConfig(**json.loads(meta["unmix.config"]))
    weights = {
        tensor.name: torch.from_numpy(numpy_helper.to_array(tensor).copy()) for tensor in model.graph.initializer
    }
    separator = StemSeparator.from_vqvae(VQVAE(config))
    for prefix, module in (("mixture_encoder.", separator.mixture_encoder), ("stem_decoder.", separator.stem_decoder)):
        state = {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    separator.codebook.k.copy_(weights["vq.codebook_t"].T)
    return separator.eval()
