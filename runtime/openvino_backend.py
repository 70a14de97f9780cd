"""The OpenVINO backend: a bundle's fp32 graphs on the CPU, in fp32 or in bfloat16 where the CPU computes it natively,
or its int8 graphs (static QDQ: OpenVINO runs their quantized convolutions on its int8 kernels).

Each stem graph is cut at its nearest-code block; all stems' encoders run as one model, their nearest-code searches
(always in fp32) as a second and their decoders as a third, with ops rewritten where needed so that every heavy op
runs on OpenVINO's fast kernels.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .cascade import Stage
from .errors import BackendError
from .heap import return_freed_memory
from .manifest import Manifest, sha256_file
from .openvino_cache import CompiledCache, default_cache_dir
from .openvino_stages import cut, plan_long_windows, reach
from .openvino_streaming import CompiledStream, StatefulRun, StreamLayout, stream_graph
from .phases import phase_taps

PRECISIONS = ("fp32", "bf16", "int8")
INSTALL_HINT = "pip install 'unmix[openvino]'"
TILE_FRAMES = 1024  # latent frames per nearest-code call: 8 MiB of fp32 distances per stem with 2048 codes
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the graphs' quantized layers, the rest in fp32
# Node names the exporter gives the nearest-code block (export/graph.py, `NearestCode`).
_VQ_IN, _VQ_OUT, _VQ_MATMUL, _VQ_SCALE, _VQ_SUB = (
    "/vq/Transpose",
    "/vq/Transpose_1",
    "/vq/MatMul",
    "/vq/Mul",
    "/vq/Sub",
)


def _openvino():
    try:
        import openvino
    except ImportError:
        raise BackendError(f"the openvino backend needs OpenVINO: {INSTALL_HINT}") from None
    return openvino


def available() -> bool:
    """Whether OpenVINO can be imported here."""
    try:
        _openvino()
    except BackendError:
        return False
    return True


@functools.cache
def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bfloat16 natively on this CPU (AMX or AVX512-BF16)."""
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@dataclass(frozen=True)
class StemParts:
    """One stem graph cut for OpenVINO: encoder (N, 1, T) → (N, C, T/hop); the codebook; decoder back to (N, 1, T)."""

    encoder: Any  # openvino.Model (untyped)
    codebook_t: np.ndarray  # (C, K) float32
    code_norms: np.ndarray  # (K,) float32
    scale: np.ndarray  # the graph's factor 2 in ‖e‖² − 2·x·e, as stored
    decoder: Any  # openvino.Model (untyped)
    plain_decoder: Any = None  # the decoder before its rewrites, which `openvino_stages` can read and cut


def split_stem_graph(path: str | Path) -> StemParts:
    """Read an exported stem graph and cut it at its `/vq/` block into its three parts:

        mixture encoder (ME)  →  nearest code (the `/vq/` block)  →  stem decoder (SD)

    The decoder's transposed convolutions are rewritten as convolutions, and it takes code indices (`from_codes`).
    Raises BackendError for a graph without that block (not written by unmix-export).
    """
    ov = _openvino()
    core = ov.Core()
    encoder_graph = core.read_model(str(path))
    nodes = {op.get_friendly_name(): op for op in encoder_graph.get_ops()}
    missing = [name for name in (_VQ_IN, _VQ_OUT, _VQ_MATMUL, _VQ_SCALE, _VQ_SUB) if name not in nodes]
    if missing:
        raise BackendError(f"{Path(path).name}: no nearest-code block ({', '.join(missing)}) for the openvino backend")
    embeddings = nodes[_VQ_IN].input_value(0)
    encoder = ov.Model([embeddings], list(encoder_graph.get_parameters()), "mixture_encoder")
    codebook_t = _constant(nodes[_VQ_MATMUL].input_value(1), path)
    scale = _constant(nodes[_VQ_SCALE].input_value(1), path)
    code_norms = _constant(nodes[_VQ_SUB].input_value(0), path)

    decoder_graph = core.read_model(str(path))  # a second copy to cut: the two parts must not share nodes
    nodes = {op.get_friendly_name(): op for op in decoder_graph.get_ops()}
    vectors = ov.opset13.parameter([-1, codebook_t.shape[0], -1], np.float32, name="code_vectors")
    nodes[_VQ_OUT].output(0).replace(vectors.output(0))
    stem = [result for result in decoder_graph.get_results() if "codes" not in result.get_friendly_name()]
    decoder = ov.Model([result.input_value(0) for result in stem], [vectors], "stem_decoder")
    plain_decoder = decoder.clone()
    _transposed_convolutions_as_convolutions(decoder)
    return StemParts(encoder, codebook_t, code_norms, scale, from_codes(decoder, codebook_t), plain_decoder)


def from_codes(model, codebook_t: np.ndarray):
    """`model` (N, C, T') code vectors → … as (N, 1, T') int32 code indices → …: its input looked up in the codebook
    inside the graph, so what stages hand each other between the nearest code and the decoder is 64 times smaller."""
    ov = _openvino()
    ops = ov.opset13
    codes = ops.parameter([-1, 1, -1], np.int32, name="codes")
    rows = ops.squeeze(codes, ops.constant(np.array([1], np.int64)))  # (N, T')
    vectors = ops.gather(ops.constant(codebook_t), rows, ops.constant(np.array(1, np.int64)))  # (C, N, T')
    vectors = ops.transpose(vectors, ops.constant(np.array([1, 0, 2], np.int64)))
    model.get_parameters()[0].output(0).replace(vectors.output(0))
    return ov.Model([result.input_value(0) for result in model.get_results()], [codes], model.get_friendly_name())


def _constant(output, path) -> np.ndarray:
    node = output.get_node()
    if node.get_type_name() != "Constant":
        raise BackendError(f"{Path(path).name}: expected a constant at {node.get_friendly_name()}")
    return np.array(node.get_data(), np.float32)


def _transposed_convolutions_as_convolutions(model) -> None:
    """Rewrite each ConvTranspose(k=4, s=2, p=1) in place as Conv(k=3, p=1) to 2·C channels + interleave
    (`unmix.runtime.phases`): OpenVINO runs ConvTranspose on a slower non-AMX kernel (in an int8 graph, on a generic
    fp32 GEMM: half the decoder's time). Other shapes are left as they are. The last one, which feeds the decoder's
    output convolution, is fused with it (`_output_on_phases`).
    """
    ops = _openvino().opset13
    for op in list(model.get_ordered_ops()):
        taps = _phase_taps(op)
        if taps is None:
            continue
        phases = ops.convolution(op.input_value(0), ops.constant(taps), [1], [1], [1], [1])
        if _output_on_phases(op, phases):
            continue
        op.output(0).replace(_interleaved(phases).output(0))


def _phase_taps(op) -> np.ndarray | None:
    """The (2·C_out, C_in, 3) phase convolution of a ConvTranspose(k=4, s=2, p=1) node, or None for any other."""
    if op.get_type_name() != "ConvolutionBackpropData" or op.get_input_size() != 2:
        return None
    attributes = op.get_attributes()
    weights = _folded(op.input_value(1))  # (C_in, C_out, 4)
    if (
        weights is None
        or attributes["strides"] != [2]
        or attributes["pads_begin"] != [1]
        or attributes["pads_end"] != [1]
        or attributes["dilations"] != [1]
        or list(attributes.get("output_padding", [0])) != [0]
    ):
        return None
    return phase_taps(weights) if weights.ndim == 3 and weights.shape[2] == 4 else None


_FOLDED: dict[str, Callable[..., np.ndarray]] = {
    "Convert": lambda x: x,
    "Subtract": np.subtract,
    "Multiply": np.multiply,
    # OpenVINO's Reshape with special_zero: a 0 keeps that axis (weights have no empty axis); numpy infers a −1
    "Reshape": lambda x, shape: x.reshape([int(d) if d else x.shape[i] for i, d in enumerate(shape)]),
}


def _folded(output) -> np.ndarray | None:
    """The value of a constant, or of a dequantization of one (an int8 graph's weights: Convert, then Subtract a
    zero point and Multiply by a scale, of constants, the last two reshaped), as float32; None for anything else."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return np.array(node.get_data(), np.float32)
    if kind not in _FOLDED:
        return None
    values = [_folded(node.input_value(i)) for i in range(node.get_input_size())]
    if any(value is None for value in values):
        return None
    return np.asarray(_FOLDED[kind](*values), np.float32)


def _output_on_phases(transposed, phases) -> bool:
    """Fuse ConvTranspose → +bias → output Conv(k=3, p=1, C → 1) → +bias into convolutions on the phases.

    The output convolution reads frames 2m−1, 2m, 2m+1: for an even output those are the odd phase at m−1, the
    even at m and the odd at m; for an odd one the even at m, the odd at m, the even at m+1. So one 3-tap
    convolution from the 2·C phase channels to 2 outputs (even, odd) replaces it, with the same zero padding at
    both ends, and only that 2-channel result is interleaved: the full-rate C-channel tensor (the decoder's largest,
    in fp32) never exists. Returns False, changing nothing, where the graph does not have that shape.
    """
    ops = _openvino().opset13
    bias_add = _only_consumer(transposed, "Add")
    output_conv = bias_add and _only_consumer(bias_add, "Convolution", ignore=("ShapeOf",))
    output_add = output_conv and _only_consumer(output_conv, "Add", ignore=("ShapeOf",))
    if not output_add:
        return False
    kernel = output_conv.input_value(1).get_node()
    attributes = output_conv.get_attributes()
    bias, out_bias = _bias(bias_add), _bias(output_add)
    if (
        kernel.get_type_name() != "Constant"
        or attributes["strides"] != [1]
        or attributes["dilations"] != [1]
        or attributes["pads_begin"] != [1]
        or attributes["pads_end"] != [1]
        or bias is None
        or out_bias is None
    ):
        return False
    weights = np.array(kernel.get_data(), np.float32)  # (1, C, 3)
    if weights.shape[0] != 1 or weights.shape[2] != 3 or out_bias.size != 1:
        return False
    c = weights.shape[1]
    if bias.size != c:
        return False
    taps = np.zeros((2, 2 * c, 3), np.float32)
    taps[0, c:, 0], taps[0, :c, 1], taps[0, c:, 1] = weights[0, :, 0], weights[0, :, 1], weights[0, :, 2]  # even
    taps[1, :c, 1], taps[1, c:, 1], taps[1, :c, 2] = weights[0, :, 0], weights[0, :, 1], weights[0, :, 2]  # odd
    shape = np.array([1, -1, 1], np.int64)
    phases = ops.add(phases, ops.reshape(ops.constant(np.concatenate([bias, bias])), ops.constant(shape), False))
    outputs = ops.convolution(phases, ops.constant(taps), [1], [1], [1], [1])
    outputs = ops.add(outputs, ops.constant(out_bias.reshape(1, 1, 1)))
    output_add.output(0).replace(_interleaved(outputs).output(0))
    return True


def _interleaved(phases):
    """(N, 2·C, L) phases, even frames in the first C channels → (N, C, 2·L) frames: DepthToSpace with the block
    index first, which OpenVINO runs in its blocked layout (a reshape and transpose made it reorder around them)."""
    return _openvino().opset13.depth_to_space(phases, "blocks_first", 2)


def _only_consumer(node, kind: str, ignore: tuple[str, ...] = ()):
    """The single consumer of `node`'s output if it is a `kind` node (consumers of type `ignore` aside), else None."""
    consumers = [target.get_node() for target in node.output(0).get_target_inputs()]
    consumers = [c for c in consumers if c.get_type_name() not in ignore]
    return consumers[0] if len(consumers) == 1 and consumers[0].get_type_name() == kind else None


def _bias(add) -> np.ndarray | None:
    """The constant vector an Add node adds (through the Reshape/Unsqueeze OpenVINO puts around it), or None."""
    node = add.input_value(1).get_node()
    while node.get_type_name() in ("Reshape", "Unsqueeze", "Convert"):
        node = node.input_value(0).get_node()
    return np.array(node.get_data(), np.float32).ravel() if node.get_type_name() == "Constant" else None


def nearest_code_model(parts: StemParts):
    """(N, C, T') embeddings → (N, 1, T') int32 indices of their nearest codes, the exported graph's arithmetic in
    fp32, whatever the engine's precision: a rounded distance would change which code wins.

    distances = ‖e‖² − (x·Eᵀ)·2 as the graph computes them; the code is the first index where they reach their
    minimum (ArgMin's rule), found by min / equal / select / min, which OpenVINO vectorises (its top-k does not).
    """
    ov = _openvino()
    ops = ov.opset13
    channels, codes = parts.codebook_t.shape
    embeddings = ops.parameter([-1, channels, -1], np.float32, name="embeddings")
    rows = ops.transpose(embeddings, ops.constant(np.array([0, 2, 1], np.int64)))
    scale = np.asarray(parts.scale, np.float32)
    if scale.size == 1 and np.frexp(scale)[0] == 0.5:  # a power of two: x·(s·E) is (x·E)·s exactly, one pass fewer
        products = ops.matmul(rows, ops.constant(parts.codebook_t * scale.item()), False, False)
        distances = ops.subtract(ops.constant(parts.code_norms), products)
    else:
        products = ops.matmul(rows, ops.constant(parts.codebook_t), False, False)
        distances = ops.subtract(ops.constant(parts.code_norms), ops.multiply(products, ops.constant(scale)))
    nearest = ops.reduce_min(distances, ops.constant(np.array([-1], np.int64)), keep_dims=True)
    index = ops.select(
        ops.equal(distances, nearest),
        ops.constant(np.arange(codes, dtype=np.int32)),
        ops.constant(np.array(codes, np.int32)),
    )
    first = ops.reduce_min(index, ops.constant(np.array([-1], np.int64)), keep_dims=True)  # (N, T', 1)
    out = ops.transpose(first, ops.constant(np.array([0, 2, 1], np.int64)))
    return ov.Model([out], [embeddings], "nearest_code")


class OpenVinoEngine:
    """The chosen stems' encoders as one model at `precision`, their nearest codes as one in fp32 tiles, and their
    decoders as one at `precision`, on OpenVINO's CPU plugin.

    One model per part rather than per stem: OpenVINO keeps a compiled model's buffers, so the stems share one
    working memory instead of holding one each (the encoders also share the mixture input). `bf16` puts the
    encoders' and decoders' convolutions on AMX or AVX512-BF16 units; `int8` takes the bundle's int8 graphs (`paths`
    must name them), whose quantized convolutions run on OpenVINO's int8 kernels.
    """

    def __init__(
        self,
        paths: dict[str, Path],
        manifest: Manifest,
        *,
        threads: int | None,
        precision: str,
        cache: Path | None | Literal["default"] = "default",
    ):
        ov = _openvino()
        if precision not in PRECISIONS:
            raise BackendError(f"the openvino backend runs {' or '.join(PRECISIONS)}, not {precision}")
        if precision == "bf16" and not native_bf16():
            raise BackendError("this CPU has no native bfloat16 (AMX or AVX512-BF16); use --precision fp32")
        if threads is not None and threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1} | (
            {"INFERENCE_NUM_THREADS": threads} if threads else {}
        )
        compute = config | {"INFERENCE_PRECISION_HINT": _HINTS[precision]}
        self.stems = tuple(paths)
        self._core, self._compute, self._precision = core, compute, precision
        self._paths, self._input_name = dict(paths), manifest.input_name
        self._staged: dict[int, list[Stage]] = {}
        self._streams: dict[tuple[int, int], tuple[CompiledStream, ...]] = {}
        self._streams_lock, self._nearest_lock = threading.Lock(), threading.Lock()
        self._cache = CompiledCache(default_cache_dir() if cache == "default" else cache)
        self._graph_digests: dict[str, str] | None = None
        self._whole: tuple[ShapedModel, ShapedModel] | None = None  # the encoders and decoders for `run`, when used
        parts = self._read_parts()  # read now, so a graph OpenVINO cannot run fails at load
        try:
            self._encoder_reach = reach(next(iter(parts.values())).encoder)
            searches = [nearest_code_model(p) for p in parts.values()]
            self._nearest_model = ov.Model(
                [m.get_results()[0].input_value(0) for m in searches],
                [m.get_parameters()[0] for m in searches],
                "nearest_codes",
            )
            self._nearest_config = config | {"INFERENCE_PRECISION_HINT": "f32"}
            self._nearest: dict[int, ShapedModel] | None = {}  # by tile width
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise self._load_error(error) from None
        del parts
        return_freed_memory()  # what reading the graphs took (tens of MB, which the heap would keep)
        detail = f", {threads} threads" if threads else ""
        self.description = f"openvino {ov.get_version().split('-')[0]} CPU{detail}, {precision}"

    def _read_parts(self) -> dict[str, StemParts]:
        """Every stem graph cut into its parts (`split_stem_graph`), read from the bundle each time they are needed
        (once per kind of stages): kept, these copies of the graphs would hold memory for nothing."""
        try:
            return {stem: split_stem_graph(path) for stem, path in self._paths.items()}
        except BackendError:
            raise
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise self._load_error(error) from None

    def _load_error(self, error: Exception) -> BackendError:
        names = ", ".join(path.name for path in self._paths.values())
        return BackendError(f"{names}: OpenVINO cannot load them: {str(error).splitlines()[0]}")

    def _joined_models(self) -> tuple[Any, Any]:
        """All stems' encoders as one model (one shared input) and their decoders as another (code indices in)."""
        ov = _openvino()
        parts = self._read_parts()
        mixture = ov.opset13.parameter([-1, 1, -1], np.float32, name=self._input_name)
        for stem_parts in parts.values():
            stem_parts.encoder.get_parameters()[0].output(0).replace(mixture.output(0))
        encoders = ov.Model([p.encoder.get_results()[0].input_value(0) for p in parts.values()], [mixture], "encoders")
        decoders = ov.Model(
            [p.decoder.get_results()[0].input_value(0) for p in parts.values()],
            [p.decoder.get_parameters()[0] for p in parts.values()],
            "decoders",
        )
        return encoders, decoders

    def _whole_models(self) -> tuple[ShapedModel, ShapedModel]:
        """`_joined_models` compiled per input shape, built on first use."""
        if self._whole is None:
            encoders, decoders = self._joined_models()
            self._whole = (
                ShapedModel(self._core, encoders, self._compute),
                ShapedModel(self._core, decoders, self._compute),
            )
        return self._whole

    def _compile(self, model):
        return self._core.compile_model(model, "CPU", self._compute)

    @property
    def prefers_stateful(self) -> bool:
        """Whether whole signals run faster on the stateful models (`stateful_run`) than in stages: in fp32, where
        the arithmetic dominates and the stateful models skip the stages' recomputed context; not in bfloat16,
        where the convolutions are so fast that the stateful models' per-call copies dominate instead, nor in int8,
        where the two ran level within this machine's noise, speed and memory (the README's Status has the
        measurements)."""
        return self._precision == "fp32"

    def stateful_run(self, items: int, block: int) -> StatefulRun:
        """A new stream through the encoders and decoders rewritten as stateful models (`openvino_streaming`):
        (items, 1, frames) input, `block` samples a call (a multiple of the hop), each sample computed once.
        The compiled models are shared by every run of the same items and block; each run has its own state, so
        streams may run in several threads at once."""
        frames = Fraction(block) * self._encoder_reach.rate  # latent frames a call
        with self._streams_lock:  # streams started from several threads compile the models once
            if (items, block) not in self._streams:
                try:
                    if frames.denominator != 1:
                        raise ValueError(f"a block of {block} samples is no whole number of latent frames")
                    key = self._cache_key("stream", items=items, block=block)
                    # the masked models first: a stream starts on them (`CompiledStream`)
                    compiled, layouts, stored = self._stream_models(key, items, block, int(frames), (1, 3))
                    # With the models in the cache, each part holds the model its streams run now, not both.
                    reload = functools.partial(self._reload_stream, key, items, block, int(frames)) if stored else None
                    self._streams[items, block] = tuple(
                        CompiledStream(
                            compiled[2 * part],
                            compiled[2 * part + 1],
                            layouts[part],
                            functools.partial(reload, part) if reload else None,
                        )
                        for part in range(2)
                    )
                    del compiled
                    return_freed_memory()  # what compiling or importing them took
                except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
                    raise BackendError(f"OpenVINO cannot stream the graphs: {str(error).splitlines()[0]}") from error
            encoders, decoders = self._streams[items, block]
        # Tiles of equal width: a block's frames are not padded to whole `TILE_FRAMES` tiles at every call.
        nearest = functools.partial(self._nearest_codes, tile=math.ceil(frames / math.ceil(frames / TILE_FRAMES)))
        return StatefulRun(encoders, nearest, decoders, items, block)

    def _reload_stream(self, key: dict, items: int, block: int, frames: int, part: int, kind: str):
        """Part `part`'s (0 encoders, 1 decoders) `kind` stream model, imported from the cache again, or compiled
        again (and stored) when the entry is gone or damaged since."""
        index = 2 * part + (kind == "masked")
        try:
            return self._stream_models(key, items, block, frames, (index,))[0][index]
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"OpenVINO cannot stream the graphs: {str(error).splitlines()[0]}") from error

    def _stream_models(
        self, key: dict, items: int, block: int, frames: int, indices: tuple[int, ...]
    ) -> tuple[list[Any], list[StreamLayout], bool]:
        """The stream models at `indices` (encoders plain, masked, decoders plain, masked) imported from the cache
        entry `key`, or all four compiled and stored when it has none that checks out; their layouts; and whether
        the cache holds them."""
        cached = self._cache.load(self._core, key, self._compute, indices=indices)
        if cached is not None:
            compiled, extra = cached
            return compiled, [StreamLayout.from_json(data) for data in extra], True
        compiled, layouts = self._compile_streams(items, block, frames)
        return compiled, layouts, self._cache.store(key, compiled, [layout.to_json() for layout in layouts])

    def _compile_streams(self, items: int, block: int, frames: int) -> tuple[list[Any], list[StreamLayout]]:
        """The encoders' and decoders' stream models compiled (plain and masked of each) and their layouts."""
        encoders, decoders = self._joined_models()
        encoder_stream = stream_graph(encoders, [[items, 1, block]])
        decoder_stream = stream_graph(
            decoders, [[items, 1, frames]] * len(self.stems), encoder_stream.layout.output_start
        )
        graphs = (encoder_stream, decoder_stream)
        models = [model for graph in graphs for model in (graph.plain, graph.masked)]
        with ThreadPoolExecutor() as pool:  # OpenVINO compiles without holding the GIL: side by side
            compiled = list(pool.map(self._compile, models))
        return compiled, [graph.layout for graph in graphs]

    def _cache_key(self, kind: str, **shapes: int) -> dict:
        """What a compile of `kind` depends on, for `openvino_cache`: the graphs, the code that builds the models
        from them, OpenVINO, the CPU and the compile settings."""
        ov = _openvino()
        if self._graph_digests is None:
            self._graph_digests = {stem: sha256_file(path) for stem, path in self._paths.items()}
        return {
            "kind": kind,
            "shapes": shapes,
            "graphs": self._graph_digests,
            "code": _code_digest(),
            "openvino": ov.get_version(),
            "cpu": [self._core.get_property("CPU", name) for name in ("FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES")],
            "config": {name: str(value) for name, value in self._compute.items()},
        }

    def stages(self, chunk: int) -> list[Stage]:
        """The engine as a chain of stages for `unmix.runtime.cascade.CascadeRun(stages, chunk)`, on (items, 1,
        samples) input, with one output per stem in `self.stems` order: the encoders and the decoders each run as
        one stage, or as two where that saves work (`plan_long_windows`), each compiled for its window's shape and
        its working memory released after each call.

        chunk: model-rate samples each window keeps.
        """
        if chunk not in self._staged:
            parts = self._read_parts()
            try:
                encoders = self._cut_stages(parts, "encoder", Fraction(chunk))
                decoders = self._cut_stages(parts, "plain_decoder", Fraction(chunk) * self._encoder_reach.rate)
            except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
                raise BackendError(
                    f"OpenVINO cannot cut the graphs into stages: {str(error).splitlines()[0]}"
                ) from None
            nearest = Stage(self._nearest_codes, 0, Fraction(1))
            self._staged[chunk] = [*encoders, nearest, *decoders]
        return self._staged[chunk]

    def _cut_stages(self, parts: dict[str, StemParts], part: str, chunk: Fraction) -> list[Stage]:
        """Every stem's `part` ("encoder" or "plain_decoder"), cut by the first stem's plan for `chunk` kept frames
        of its input; each stage compiled as one model over all stems (the encoders' first shares the mixture)."""
        ov = _openvino()
        models = [getattr(stem_parts, part) for stem_parts in parts.values()]
        plan = plan_long_windows(models[0], chunk)
        stages = []
        for index, step in enumerate(plan):
            pieces = [cut(model, step.start, step.stop) for model in models]
            if part == "plain_decoder":
                for piece in pieces:
                    _transposed_convolutions_as_convolutions(piece)
                if index == 0:  # the nearest-code stage hands over code indices
                    pieces = [from_codes(piece, p.codebook_t) for piece, p in zip(pieces, parts.values(), strict=True)]
            if part == "encoder" and index == 0:
                mixture = ov.opset13.parameter([-1, 1, -1], np.float32, name="mixture")
                for piece in pieces:
                    piece.get_parameters()[0].output(0).replace(mixture.output(0))
                parameters = [mixture]
            else:
                parameters = [piece.get_parameters()[0] for piece in pieces]
            model = ov.Model([piece.get_results()[0].input_value(0) for piece in pieces], parameters, f"stage{index}")
            if self._precision == "bf16":
                _bf16_handover(model, output=index < len(plan) - 1, input=index > 0)
            # the outputs are the request's own buffers; its memory is released once the cascade has copied them
            shaped = ShapedModel(self._core, model, self._compute)
            infer = functools.partial(shaped.infer, copy=False)
            stages.append(Stage(infer, step.reach.context, step.reach.rate, shaped.release))
        return stages

    def _nearest_codes(self, embeddings: list[np.ndarray], tile: int = TILE_FRAMES) -> list[np.ndarray]:
        """Every stem's (N, 1, T') nearest codes of its (N, C, T') embeddings, `tile` frames a call, so the
        distance matrix stays small whatever the window. A short last tile is padded to a whole one: one input
        shape, one compile per tile width."""
        frames = embeddings[0].shape[2]
        codes = [np.empty((x.shape[0], 1, frames), np.int32) for x in embeddings]
        with self._nearest_lock:  # one request per tile width, shared by the streams of every thread
            assert self._nearest is not None  # until close(), after which the separator refuses every call
            if tile not in self._nearest:
                self._nearest[tile] = ShapedModel(self._core, self._nearest_model, self._nearest_config)
            self._fill_codes(self._nearest[tile], embeddings, codes, tile)
        return codes

    @staticmethod
    def _fill_codes(search: ShapedModel, embeddings: list[np.ndarray], codes: list[np.ndarray], tile: int) -> None:
        frames = embeddings[0].shape[2]
        for first in range(0, frames, tile):
            tiles = [x[:, :, first : first + tile] for x in embeddings]
            width = tiles[0].shape[2]
            if width < tile:
                tiles = [np.pad(part, ((0, 0), (0, 0), (0, tile - width))) for part in tiles]
            found = search.infer([np.ascontiguousarray(part) for part in tiles], copy=False)
            for stem_codes, stem_found in zip(codes, found, strict=True):
                stem_codes[:, :, first : first + width] = stem_found[:, :, :width]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # Each part's working memory is released once it has run, so the peak is the larger part's, not both.
        encoders, decoders = self._whole_models()
        embeddings = encoders.infer([batch], copy=False)
        codes = self._nearest_codes(embeddings)
        del embeddings
        encoders.release()
        outputs = dict(zip(self.stems, decoders.infer(codes), strict=True))
        decoders.release()
        return outputs

    def close(self) -> None:
        """Drop the infer requests, compiled models and cut stages (stages handed out earlier keep theirs alive
        until they are dropped too)."""
        for model in (*(self._whole or ()), *(self._nearest or {}).values()):
            model.close()
        self._whole = self._nearest = None
        self._staged = {}
        self._streams = {}
        self._core = None
        return_freed_memory()


class ShapedModel:
    """A model compiled for the shapes of its latest inputs, one set of shapes at a time.

    For static shapes OpenVINO plans every intermediate tensor into one arena, reused across operations, and
    picks kernels for the exact shape: faster and leaner than its dynamic-shape path, whose allocations it keeps
    per shape. Windows of one length (`cascade`'s fixed windows, the nearest code's whole tiles) compile once; a
    new shape drops the previous compile before compiling its own.
    """

    def __init__(self, core, model, config: dict):
        self._core, self._model, self._config = core, model, config
        self._shapes: tuple | None = None
        self._bf16: list[bool] = []
        self._compiled: Any | None = None  # openvino CompiledModel (untyped)
        self._request: Any | None = None  # and its InferRequest

    def infer(self, inputs: list[np.ndarray], copy: bool = True) -> list[np.ndarray]:
        """One call on `inputs` (shared, not copied); see `_infer` for `copy`."""
        shapes = tuple(x.shape for x in inputs)
        if shapes != self._shapes:
            self.close()
            model = self._model.clone()
            model.reshape({index: list(shape) for index, shape in enumerate(shapes)})
            self._compiled = self._core.compile_model(model, "CPU", self._config)
            self._shapes = shapes
            self._bf16 = [port.get_element_type() == _openvino().Type.bf16 for port in self._compiled.inputs]
        if self._request is None:
            assert self._compiled is not None  # compiled above for these shapes, or kept since
            self._request = self._compiled.create_infer_request()
        if any(self._bf16):  # bfloat16 travels as float16-typed arrays (NumPy has no bfloat16): say what it is
            bf16 = _openvino().Type.bf16
            inputs = [
                _openvino().Tensor(x, list(x.shape), bf16) if is_bf16 else x
                for x, is_bf16 in zip(inputs, self._bf16, strict=True)
            ]
        return _infer(self._request, inputs, copy)

    def release(self) -> None:
        """Free the working memory and the request's output buffers until the next call (which allocates them again,
        at little cost); outputs handed out without a copy are invalid from here on."""
        self._request = None
        if self._compiled is not None:
            self._compiled.release_memory()
        return_freed_memory()

    def close(self) -> None:
        """Drop the compiled model and its request (a later call compiles again)."""
        self._compiled = self._request = self._shapes = None
        return_freed_memory()


def _bf16_handover(model, *, output: bool, input: bool) -> None:
    """Make the stage `model` hand its outputs on (`output`) and take its inputs (`input`) in bfloat16, in place:
    half the bytes between stages that compute in bfloat16 anyway. OpenVINO shows bfloat16 data to NumPy as
    float16-typed arrays of the same bits; the cascade only moves them."""
    ops = _openvino().opset13
    if output:
        for result in model.get_results():
            result.input(0).replace_source_output(ops.convert(result.input_value(0), "bf16").output(0))
    if input:
        for parameter in model.get_parameters():
            replacement = ops.parameter(
                parameter.get_partial_shape(), _openvino().Type.bf16, parameter.get_friendly_name()
            )
            converted = ops.convert(replacement, "f32")
            for target in list(parameter.output(0).get_target_inputs()):
                target.replace_source_output(converted.output(0))
            model.replace_parameter(model.get_parameter_index(parameter), replacement)
    model.validate_nodes_and_infer_types()


def _infer(request, inputs: list[np.ndarray], copy: bool = True) -> list[np.ndarray]:
    """One call on `inputs` (shared, not copied). The outputs are OpenVINO's own buffers, which the request's next
    call overwrites, unless `copy`."""
    request.infer(dict(enumerate(inputs)), share_inputs=True, share_outputs=True)  # read below, not copied here
    outputs = [request.get_output_tensor(index).data for index in range(len(request.model_outputs))]
    return [np.array(output, copy=True) for output in outputs] if copy else outputs


@functools.cache
def _code_digest() -> str:
    """The SHA-256 of the modules that build the OpenVINO models: a change to them invalidates cached compiles."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("openvino_backend.py", "openvino_stages.py", "openvino_streaming.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()
