"""`Separator`: a bundle loaded for one device, separating arrays, streams and files.

Audio of any rate and channel count goes in, and each stem comes out in the same shape. Every path (array, stream,
file) runs the same `Stream`, so they give identical results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soxr

from .audio import MAX_CHANNELS
from .backends import default_precision, open_engine, resolve_backend
from .callbacks import Cancel, Progress, cancel_check
from .cascade import CascadeRun
from .chunking import ChunkPlan, SignalBuffer, SilenceGate, Window, default_chunk
from .engines import Device, Engine, parse_device
from .errors import AudioError, Cancelled, SeparatorClosed, StreamFinished, UsageError
from .files import DEFAULT_FILENAME, FileResult
from .files import separate_file as _separate_file
from .manifest import MANIFEST_FILE, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, STEMS, BundleError, Manifest, read_manifest
from .openvino_streaming import StatefulRun
from .refinement import WINDOW, BandWeights, Refiner, check_spread, covers_the_mixture

DEFAULT_BUNDLE = Path(__file__).parent / "bundles" / "default"
# Samples per engine call (mono items × window length). Memory grows with it (on ONNX Runtime CPU the model's
# 2048-code distance matrix dominates), so a CPU runs one channel of one window at a time (batching gains a CPU
# nothing; bench/results/runtime_memory.md has the measurements); a GPU takes a few per call. OpenVINO's working
# memory grows with the call too, so it takes one mono window per call (1: at least one item).
DEFAULT_BATCH_SAMPLES = {"cpu": 1 << 21, "cuda": 1 << 22, "openvino": 1}
# How a refined stereo input is separated: "mid" runs the model once, on (L + R) / 2, and lets the refinement's
# spatial filter place each stem (half the model work; see the README for its SDR); "per-channel" runs it on each.
STEREO_MODES = ("mid", "per-channel")
# A low-latency stream (`Separator.stream(..., low_latency=True)`, on a backend that runs in stages) computes this
# many samples a call (OpenVINO: stateful models, `openvino_streaming`) and refines in blocks of this many STFT
# frames: output trails input by the model's look-ahead plus about these (bench/results: latency and cost).
LOW_LATENCY_SECONDS = 0.5
LOW_LATENCY_REFINE_FRAMES = 4
ARRAY_BLOCK_FRAMES = 1 << 18  # arrays are fed in blocks so the working copies stay small


def resolve_bundle(bundle: str | Path) -> Path:
    """The folder of `bundle`: a path, or "default" for the bundle shipped inside the package."""
    if str(bundle) == "default":
        if not (DEFAULT_BUNDLE / MANIFEST_FILE).is_file():
            raise BundleError(
                f"no default model is installed with this package (expected a bundle in {DEFAULT_BUNDLE}); "
                "pass a bundle folder instead (--bundle PATH)"
            )
        return DEFAULT_BUNDLE
    path = Path(bundle)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    return path


def choose_stems(manifest: Manifest, stems: Sequence[str] | None) -> list[str]:
    if not stems:
        return list(manifest.stems)
    unknown = [stem for stem in stems if stem not in manifest.stems]
    if unknown:
        raise BundleError(f"the bundle has no stem {', '.join(map(repr, unknown))}; it has {', '.join(manifest.stems)}")
    return list(dict.fromkeys(stems))  # bundle order would surprise; keep the caller's, without repeats


def _refinement_weights(manifest: Manifest, bundle: Path) -> dict[str, np.ndarray] | None:
    """The bundle's band weights for the refinement, per STFT bin (None when it has none)."""
    if "band_weights" not in manifest.refinement:
        return None
    try:
        weights = BandWeights.from_dict(manifest.refinement["band_weights"])
    except ValueError as error:
        raise BundleError(f"{bundle}: the manifest's refinement band weights are malformed: {error}") from None
    return weights.per_bin(WINDOW, manifest.sample_rate)


def _refinement_spread(manifest: Manifest, bundle: Path) -> dict[str, int]:
    """The bundle's power spread for the refinement, stem → bins (empty when it has none)."""
    entry = manifest.refinement.get("spread_bins", {})
    try:
        if not isinstance(entry, dict):
            raise ValueError(f"expected {{stem: bins}}, got {entry!r}")
        return {stem: check_spread(stem, bins) for stem, bins in entry.items()}
    except ValueError as error:
        raise BundleError(f"{bundle}: the manifest's refinement spread is malformed: {error}") from None


def _whole_number(name: str, value) -> int:
    """`value` when it is an int (not a bool); `UsageError` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise UsageError(f"{name} must be a whole number of samples, got {value!r}")
    return int(value)


class Separator:
    """Separates audio with a bundle's graphs. Build it with `Separator.from_bundle`.

    `close()` (or leaving a `with Separator.from_bundle(...) as separator:` block) frees the engine's sessions
    and buffers; the separator cannot be used after it.
    """

    def __init__(
        self,
        manifest: Manifest,
        engine: Engine,
        *,
        chunk: int,
        batch_samples: int,
        bundle: Path,
        stems: Sequence[str] | None = None,
        refine: bool = False,
        stereo: str = "per-channel",
        stateful: bool | None = None,
    ):
        if _whole_number("batch_samples", batch_samples) < 1:
            raise UsageError(f"batch_samples must be positive, got {batch_samples}")
        stems = tuple(stems or engine.stems)
        if missing := [stem for stem in stems if stem not in engine.stems]:
            raise UsageError(f"the engine does not compute {', '.join(missing)}")
        if refine and not covers_the_mixture(engine.stems):
            raise BundleError(
                f"refinement splits the mixture between all of {', '.join(STEMS)}, and this engine computes only "
                f"{', '.join(engine.stems)}; separate without it (refine=False, --no-refine)"
            )
        if stereo not in STEREO_MODES:
            raise UsageError(f"unknown stereo mode {stereo!r}; use one of {', '.join(STEREO_MODES)}")
        if stereo == "mid" and not refine:
            raise UsageError(
                "stereo 'mid' needs the refinement to place each stem in the stereo field; use per-channel"
            )
        self.manifest = manifest
        self._engine = engine
        self._closed = False
        self.refine = refine
        self.stereo = stereo
        if stateful and not hasattr(engine, "stateful_run"):
            raise UsageError("stateful graphs run on the openvino backend only; leave stateful unset there")
        # Whether whole signals (separate, separate_file, a plain stream) run on the stateful models too
        self.stateful = bool(getattr(engine, "prefers_stateful", False)) if stateful is None else stateful
        # also for refining raw output later (`refine(mixture, estimates, weights=…, spread=…)`)
        self.refinement_weights = _refinement_weights(manifest, bundle)
        self.refinement_spread = _refinement_spread(manifest, bundle)
        self._stems = stems
        self._plan = ChunkPlan(chunk, manifest.context_samples, manifest.hop_length)
        self.batch_samples = batch_samples
        self.bundle = bundle

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path = "default",
        *,
        device: str = "cpu",
        backend: str = "auto",
        threads: int | None = None,
        stems: Sequence[str] | None = None,
        chunk: int | None = None,
        precision: str = "auto",
        batch_samples: int | None = None,
        spinning: bool = False,
        verify: bool = True,
        refine: bool | None = None,
        stereo: str | None = None,
        stateful: bool | None = None,
    ) -> Separator:
        """Load `bundle` (a folder, or "default") for `device` ("cpu", "cuda", "cuda:N").

        backend: "auto" (OpenVINO on a CPU where it is installed, else ONNX Runtime), "ort", "openvino" or "trt"
            (TensorRT engines; needs a CUDA device).
        threads: CPU threads per run (default: ONNX Runtime's, the physical cores).
        stems: the stems to compute (default: all in the bundle); the others cost nothing.
        chunk: output samples per window at the model's rate, a multiple of its hop (default: `chunking.default_chunk`).
        precision: "auto" (on OpenVINO: bf16 where the CPU computes it natively, else the bundle's int8 graphs
            where they passed the export's SDR gate; else fp32), "fp32", "bf16" (the fp32 graphs
            in bfloat16 on the openvino backend), or the bundle's "int8" / "fp16" graphs.
        batch_samples: samples per engine call: windows × channels go as one batch up to this many
            (default 2**21 on CPU, 2**22 on GPU, one window's channel on OpenVINO; at least one per call).
        spinning: let idle ONNX Runtime threads spin (faster on a dedicated machine, off when embedded).
        verify: check every bundle file's sha256 against the manifest.
        refine: refinement (`unmix.runtime.refinement`): the stems' estimates become filters over the
            mixture's spectrogram (a power mask for drums, a spatial Wiener filter for the rest). Default: on
            when the bundle has all four stems, which then all run even when `stems` asks for fewer. False gives
            the paper's output, each decoder's waveform.
        stereo: how a stereo input is separated (`STEREO_MODES`): "mid" (the default with refinement) runs the
            model once on (L + R) / 2 and the refinement places each stem from the mixture's stereo image;
            "per-channel" (the default without) runs it on each channel.
        stateful: whether whole signals also run on the stateful models a low-latency stream runs on (openvino
            only): every sample through every layer once, in blocks of `LOW_LATENCY_SECONDS`, rather than in
            stages that each recompute their context. Default: on where the engine computes in fp32, off in
            bfloat16 and int8 (`OpenVinoEngine.prefers_stateful`). The stems are the same either way (to fp32 rounding).
        """
        path = resolve_bundle(bundle)
        manifest = read_manifest(path, verify=verify)
        chosen = choose_stems(manifest, stems)
        if refine is None:
            refine = covers_the_mixture(manifest.stems)
        if stereo is None:
            stereo = "mid" if refine else "per-channel"
        where: Device = parse_device(device)
        hop = manifest.hop_length
        resolved = resolve_backend(backend, where, precision)
        if precision == "auto":
            precision = default_precision(resolved, manifest)
        if chunk is None:
            chunk = default_chunk(resolved, manifest.sample_rate, hop, precision)
        elif _whole_number("chunk", chunk) <= 0 or chunk % hop:
            nearest = max(hop, round(chunk / hop) * hop)
            raise UsageError(
                f"chunk must be a positive multiple of the hop ({hop} samples), e.g. {nearest}; got {chunk}"
            )
        engine = open_engine(
            path,
            manifest,
            list(manifest.stems) if refine else chosen,  # the masks need every stem's estimate
            device=where,
            backend=resolved,
            precision=precision,
            threads=threads,
            spinning=spinning,
        )
        if batch_samples is None:
            batch_samples = DEFAULT_BATCH_SAMPLES.get(resolved, DEFAULT_BATCH_SAMPLES[where.kind])
        return cls(
            manifest,
            engine,
            chunk=chunk,
            batch_samples=batch_samples,
            bundle=path,
            stems=chosen,
            refine=refine,
            stereo=stereo,
            stateful=stateful,
        )

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems this separator returns (with refinement the engine computes all four)."""
        return self._stems

    @property
    def sample_rate(self) -> int:
        """The model's sample rate (inputs at other rates are resampled)."""
        return self.manifest.sample_rate

    @property
    def description(self) -> str:
        chunking = (
            "stateful graphs"
            if self.stateful
            else f"chunk {self._plan.chunk} + 2 × {self._plan.context} context samples"
        )
        refinement = f"; Wiener refinement, stereo {self.stereo}" if self.refine else ""
        return f"{self._engine.description}; {chunking}{refinement}"

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Free the engine's resources (sessions, compiled models, GPU buffers). Using the separator afterwards
        raises `SeparatorClosed`; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._engine.close()

    def __enter__(self) -> Separator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SeparatorClosed("this separator is closed; load the bundle again with Separator.from_bundle()")

    def stream(
        self,
        sample_rate: int,
        channels: int,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        total_frames: int | None = None,
        low_latency: bool = False,
    ) -> Stream:
        """An incremental separation of audio at `sample_rate` with `channels` channels.

        low_latency: on the openvino backend, the graphs run as stateful models (`openvino_streaming`) on blocks
            of `LOW_LATENCY_SECONDS`, each sample computed once: stems trail the input by the model's look-ahead
            (2.08 s for the paper's model) plus about one block; `Stream.latency` says how far behind. Elsewhere it
            changes nothing.
        """
        self._check_open()
        return Stream(
            self,
            sample_rate,
            channels,
            progress=progress,
            cancel=cancel,
            total_frames=total_frames,
            low_latency=low_latency,
        )

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate `audio` (frames,) or (frames, channels), floats in [-1, 1], at `sample_rate`.

        Returns {stem: float32 array of the input's shape}. `progress(done, total)` is called in input
        frames after every engine call; `cancel()` returning true (or a set `threading.Event`) stops
        the run between chunks with `Cancelled`.
        """
        self._check_open()
        audio = np.asarray(audio)
        if audio.ndim not in (1, 2):
            raise AudioError(f"audio must be (frames,) or (frames, channels), got shape {audio.shape}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise AudioError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
        frames = audio if audio.ndim == 2 else audio[:, None]
        if not len(frames):
            raise AudioError("zero-length audio (no samples to separate)")
        stream = self.stream(sample_rate, frames.shape[1], progress=progress, cancel=cancel, total_frames=len(frames))
        parts = [stream.feed(frames[i : i + ARRAY_BLOCK_FRAMES]) for i in range(0, len(frames), ARRAY_BLOCK_FRAMES)]
        parts.append(stream.finish())
        return {stem: np.concatenate([part[stem] for part in parts]).reshape(audio.shape) for stem in self.stems}

    def separate_file(
        self,
        input: str | Path,
        output_dir: str | Path,
        *,
        filename: str = DEFAULT_FILENAME,
        format: str | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> FileResult:
        """Separate an audio file into `output_dir`/`filename` per stem; see `unmix.runtime.files.separate_file`."""
        self._check_open()
        return _separate_file(
            self,
            input,
            output_dir,
            filename=filename,
            format=format,
            overwrite=overwrite,
            progress=progress,
            cancel=cancel,
        )


class Stream:
    """Incremental separation: `feed` blocks of audio, get back each stem's samples as they become final.

    Output lags input by about one chunk plus the context; `finish` returns the rest. The concatenated
    outputs have exactly as many frames as were fed and equal a whole-signal separation.

    Each channel is separated on its own (channels are batch items of the mono model), at the model's rate (soxr
    resamples in and back out), in overlap-save windows that make the result independent of the chunk length. With
    refinement, the stems' estimates are then turned into filters over the mixture (`refinement.Refiner`, on the
    same streaming terms); a stereo input in the "mid" mode (`STEREO_MODES`) is separated once, on its mid channel,
    and the refinement's spatial filter places each stem in the stereo field from the mixture itself.
    """

    def __init__(
        self,
        separator: Separator,
        sample_rate: int,
        channels: int,
        *,
        progress: Progress | None,
        cancel: Cancel | None,
        total_frames: int | None,
        low_latency: bool = False,
    ):
        # bool is an int (True == 1): refuse it, and NaN, inf, None, strings and fractions, with one line.
        if (
            isinstance(sample_rate, (bool, np.bool_))
            or not isinstance(sample_rate, (int, float, np.integer, np.floating))
            or not np.isfinite(sample_rate)
            or int(sample_rate) != sample_rate
            or sample_rate <= 0
        ):
            raise AudioError(f"sample rate must be a positive whole number of Hz, got {sample_rate!r}")
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:  # a 1 Hz rate would make soxr ask for gigabytes
            raise AudioError(
                f"sample rate {int(sample_rate)} Hz is outside the supported {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz"
            )
        if isinstance(channels, (bool, np.bool_)) or not isinstance(channels, (int, np.integer)):
            raise AudioError(f"channels must be a whole number, got {channels!r}")
        if not 1 <= channels <= MAX_CHANNELS:
            hint = " (is the array (channels, frames)? pass (frames, channels))" if channels > MAX_CHANNELS else ""
            raise AudioError(f"{channels} channels: between 1 and {MAX_CHANNELS} are supported{hint}")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self._separator = separator
        self._plan = separator._plan
        self._progress = progress
        self._cancel = cancel_check(cancel)
        self._total = total_frames
        model_rate = separator.sample_rate
        self._ratio = self.sample_rate / model_rate
        resampling = self.sample_rate != model_rate
        self._resample_in = (
            soxr.ResampleStream(self.sample_rate, model_rate, channels, dtype="float32") if resampling else None
        )
        self._resample_out = (
            {
                stem: soxr.ResampleStream(model_rate, self.sample_rate, channels, dtype="float32")
                for stem in separator.stems
            }
            if resampling
            else None
        )
        # the model's channels: the mid channel alone, or each channel
        self._mid = separator.stereo == "mid" and channels == 2
        self._model_channels = 1 if self._mid else channels
        self._buffer = SignalBuffer(self._model_channels)
        # Low latency (or `Separator.stateful`): stateful models, each sample computed once. Otherwise backends that
        # run in stages recompute only each stage's own context (`cascade`); others run whole windows. Only a
        # low-latency stream refines in short blocks: a whole signal's refinement stays what it was.
        engine = separator._engine
        self._cascade: CascadeRun | StatefulRun | None = None
        self._gate = None
        stateful_run = getattr(engine, "stateful_run", None) if low_latency or separator.stateful else None
        low_latency = low_latency and stateful_run is not None
        if stateful_run is not None:
            hop = separator.manifest.hop_length
            # an odd number of hops, as the default chunk on OpenVINO (see chunking.DEFAULT_CHUNK_SECONDS)
            self._cascade = stateful_run(
                self._model_channels, (round(LOW_LATENCY_SECONDS * model_rate / hop) | 1) * hop
            )
        elif hasattr(engine, "stages"):
            self._cascade = CascadeRun(engine.stages(self._plan.chunk), self._plan.chunk)
        if self._cascade is not None:
            self._gate = SilenceGate(self._model_channels, separator.manifest.context_samples)
        refine_frames = {"block_frames": LOW_LATENCY_REFINE_FRAMES} if low_latency else {}
        self._refiner = (
            Refiner(
                separator._engine.stems,
                channels,
                weights=separator.refinement_weights,
                spread=separator.refinement_spread,
                spatial="mixture" if self._mid else "estimates",
                **refine_frames,
            )
            if separator.refine
            else None
        )
        window = self._plan.window_length
        self._windows_per_call = max(1, separator.batch_samples // (window * self._model_channels))
        self._next_window = 0  # full windows run so far
        self._model_done = 0  # model-rate output samples produced
        self._frames_in = 0
        self._frames_out = 0
        self._finished = False

    def feed(self, block: np.ndarray) -> dict[str, np.ndarray]:
        """Add (frames, channels) of audio; returns the stems' next samples (possibly none)."""
        block = self._check(block)
        self._frames_in += len(block)
        self._append(self._resample_in.resample_chunk(block) if self._resample_in else block)
        outputs = self._empty()
        if self._cascade:
            self._run_cascade(outputs, final=False)
            return self._emit(outputs, final=False)
        ready = self._plan.full_windows(self._buffer.end)
        while ready - self._next_window >= self._windows_per_call:
            first = self._next_window
            self._next_window += self._windows_per_call
            self._run([self._plan.window(k) for k in range(first, self._next_window)], outputs)
        return self._emit(outputs, final=False)

    def finish(self) -> dict[str, np.ndarray]:
        """End of input: the stems' remaining samples."""
        self._separator._check_open()
        if self._finished:
            raise StreamFinished("this stream is finished; start a new one with separator.stream()")
        self._finished = True
        if self._resample_in:
            self._append(self._resample_in.resample_chunk(np.zeros((0, self.channels), np.float32), last=True))
        length = self._buffer.end
        emitted = self._model_done
        windows = None if self._cascade else self._plan.finish(self._next_window, length)
        self._buffer.pad_to(self._plan.padded_length(length))  # the whole-signal reference's zero padding
        outputs = self._empty()
        if self._cascade:
            self._run_cascade(outputs, final=True)
        else:
            step = self._windows_per_call
            assert windows is not None  # planned above whenever there is no cascade
            for first in range(0, len(windows), step):
                self._run(windows[first : first + step], outputs)
        for stem, parts in outputs.items():  # drop the output of the padding
            if parts:
                outputs[stem] = [np.concatenate(parts)[: length - emitted]]
        result = self._emit(outputs, final=True)
        if self._progress and self._total is not None:
            self._progress(self._total, self._total)
        return result

    @property
    def latency(self) -> int:
        """Input frames (at the input's rate) that the stems trail the input by at most, before the end (a resampled
        input adds its resampler's short delay)."""
        hop = self._separator.manifest.hop_length  # input waits for whole hops
        model = self._cascade.delay + hop if self._cascade else self._plan.window_length
        if self._refiner:
            model += self._refiner.window + self._refiner.block_frames * self._refiner.hop
        return int(np.ceil(model * self._ratio))

    def _run_cascade(self, outputs: dict[str, list[np.ndarray]], final: bool) -> None:
        """Push the buffered model input through the stages, a chunk at a time (for cancel and progress); append
        the stems' new (frames, channels) samples to `outputs`."""
        assert self._cascade is not None and self._gate is not None  # called only with a cascade, made with its gate
        pending = self._buffer.slice(self._buffer.offset, self._buffer.end).T[:, None, :]  # (channels, 1, frames)
        self._buffer.discard_before(self._buffer.end)
        self._gate.add(pending[:, 0])
        step = self._plan.chunk
        for first in range(0, max(1, pending.shape[2]), step):
            if self._cancel is not None and self._cancel():
                raise Cancelled("separation cancelled")
            results = self._cascade.feed([np.ascontiguousarray(pending[:, :, first : first + step])])
            if final and first + step >= pending.shape[2]:
                finished = self._cascade.finish()
                results = (
                    [np.concatenate(pair, axis=2) for pair in zip(results, finished, strict=True)]
                    if results
                    else finished
                )
            if results and results[0].shape[2]:
                self._keep(outputs, results)
            self._report_progress()  # also after calls whose output is still held back (the look-ahead)

    def _keep(self, outputs: dict[str, list[np.ndarray]], results: list[np.ndarray]) -> None:
        """Append the cascade's (channels, 1, frames) results, one per stem, gated, to `outputs`."""
        assert self._gate is not None  # made with the cascade
        gated = self._gate.gate(np.stack([result[:, 0] for result in results], axis=1))  # (channels, stems, frames)
        for index, stem in enumerate(self._separator._engine.stems):
            kept = gated[:, index].T  # (frames, model channels)
            outputs[stem].append(np.repeat(kept, self.channels, axis=1) if self._mid else kept)
        self._model_done += gated.shape[2]

    def _report_progress(self) -> None:
        """`progress(done, total)` in input frames, after each engine call."""
        if self._progress:
            done = round(self._model_done * self._ratio)
            self._progress(min(done, self._total) if self._total is not None else done, self._total or 0)

    def _check(self, block: np.ndarray) -> np.ndarray:
        self._separator._check_open()
        if self._finished:
            raise StreamFinished("this stream is finished; start a new one with separator.stream()")
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise AudioError(f"expected blocks of shape (frames, {self.channels}), got {block.shape}")
        if not np.issubdtype(
            block.dtype, np.floating
        ):  # as separate() refuses: int16 is not scaled, complex is not audio
            raise AudioError(f"audio must be floating point in [-1, 1], got {block.dtype}")
        block = np.ascontiguousarray(block, dtype=np.float32)
        finite = np.isfinite(block)
        if not finite.all():
            frame, channel = np.argwhere(~finite)[0]
            position = self._frames_in + int(frame)
            raise AudioError(
                f"non-finite sample ({block[frame, channel]}) at frame {position} "
                f"({position / self.sample_rate:.3f} s), channel {channel + 1}"
            )
        return block

    def _append(self, block: np.ndarray) -> None:
        """Add model-rate input to the window buffer and, with refinement, to the refiner's mixture."""
        self._buffer.append(block.mean(axis=1, keepdims=True) if self._mid else block)
        if self._refiner:
            self._refiner.add_mixture(block)

    def _empty(self) -> dict[str, list[np.ndarray]]:
        return {stem: [] for stem in self._separator._engine.stems}

    def _run(self, windows: list[Window], outputs: dict[str, list[np.ndarray]]) -> None:
        """Run windows of equal length as (windows × channels) mono items, in calls of at most batch_samples."""
        if self._cancel is not None and self._cancel():
            raise Cancelled("separation cancelled")
        length = windows[0].stop - windows[0].start
        items = np.stack([self._buffer.slice(w.start, w.stop) for w in windows])  # (windows, time, channels)
        batch = np.ascontiguousarray(items.transpose(0, 2, 1)).reshape(-1, 1, length)
        results = {stem: np.zeros_like(batch) for stem in self._separator._engine.stems}
        # Digital silence in, digital silence out: such items are not run (the graph would add its bias hum).
        sounding = np.flatnonzero(batch.any(axis=(1, 2)))
        per_call = max(1, self._separator.batch_samples // length)
        for first in range(0, len(sounding), per_call):
            chosen = sounding[first : first + per_call]
            part = batch if len(chosen) == len(batch) else batch[chosen]
            for stem, output in self._separator._engine.run(part).items():
                results[stem][chosen] = output
        for stem, result in results.items():
            per_window = result.reshape(len(windows), self._model_channels, length).transpose(0, 2, 1)
            for window, output in zip(windows, per_window, strict=True):
                kept = output[window.keep_start - window.start : window.keep_stop - window.start]
                # the mid channel's estimate stands for every channel; the refinement takes the image from the mixture
                outputs[stem].append(np.repeat(kept, self.channels, axis=1) if self._mid else kept)
        self._model_done = windows[-1].keep_stop
        self._buffer.discard_before(windows[-1].start)  # a final flush-right window may start this early
        self._report_progress()

    def _emit(self, outputs: dict[str, list[np.ndarray]], final: bool) -> dict[str, np.ndarray]:
        estimates = {
            stem: np.concatenate(parts) if parts else np.zeros((0, self.channels), np.float32)
            for stem, parts in outputs.items()
        }
        if self._refiner:
            estimates = self._refiner.refine(estimates, final=final)
        result = {}
        for stem in self._separator.stems:
            audio = estimates[stem]
            if self._resample_out:
                audio = self._resample_out[stem].resample_chunk(audio, last=final)
            result[stem] = audio
        produced = len(next(iter(result.values())))
        if final:  # resampling back can miss or overshoot the input length by a sample: match it exactly
            wanted = self._frames_in - self._frames_out
            for stem, audio in result.items():
                if len(audio) < wanted:
                    audio = np.concatenate([audio, np.zeros((wanted - len(audio), self.channels), np.float32)])
                result[stem] = audio[:wanted]
            produced = wanted
        self._frames_out += produced
        return result
