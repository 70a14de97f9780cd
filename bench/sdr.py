"""Separation quality on a MUSDB18-HQ-layout test split: the bundle, the same model in PyTorch, baselines, an oracle
and the VQ-VAE ceiling in one table of the paper's SDR, with each precision's fidelity to the reference beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unmix.runtime.manifest import STEMS
from unmix.runtime.refinement import covers_the_mixture, refine

from .baselines import ideal_ratio_mask, scaled_mixture_estimates
from .graphs import BundleGraphs
from .machine import git_revision, load_average, machine_info, usable_cores
from .models import provenance_checkpoints
from .musdb import Song, read_song, subset_songs
from .reference import PAPER_CHUNK, PaperStylePath, exact_separate
from .report import SCHEMA_VERSION, now
from .scores import bsseval_sdr, sdr

SCALED_MIXTURE = "ScaledMixture (mixture / 4)"
IRM = "IRM oracle (power ratio mask, STFT 4096/1024)"
PYTORCH = "PyTorch fp32 (exact)"
PAPER_STYLE = "PyTorch fp32 (paper-style chunks)"
CEILING = "VQ-VAE ceiling (SE → SD on the true stem)"


@dataclass
class SdrSettings:
    data: Path
    subset: str = "test"
    bundle: str | None = "default"  # None: no model rows (baselines, and the ceiling when given)
    precisions: tuple[str, ...] | None = None  # default: fp32 and int8 (CPU) / fp16 (CUDA), those the bundle has
    device: str = "cpu"
    backend: str = "auto"
    threads: int | None = None
    separator: tuple[str, ...] = ()  # phase-2 runs/checkpoints (stem=PATH, {stem} or one PATH): the PyTorch model
    checkpoint: tuple[str, ...] = ()  # phase-1 VQ-VAE checkpoints, same forms: the ceiling
    trust_pickle: bool = False
    songs: int | None = None  # the first N songs only
    max_seconds: float | None = None  # the first S seconds of each song only
    museval: bool = False
    paper_style: bool = False
    baselines: bool = True
    stems: tuple[str, ...] | None = None  # a subset to score (default: the bundle's, or all four)
    provenance_pytorch: bool = True  # the PyTorch row from the checkpoints the bundle's provenance names
    stereo: str = "mid"  # how the refined rows separate a stereo song: as `unmix separate` (mid) or per channel


def method_kind(name: str) -> str:
    return {
        SCALED_MIXTURE: "baseline",
        IRM: "oracle",
        CEILING: "ceiling",
        PYTORCH: "reference",
        PAPER_STYLE: "reference",
    }.get(name, "model")


BACKEND_NAMES = {"trt": "TensorRT", "openvino": "OpenVINO", "ort": "ONNX Runtime"}


def model_method(precision: str, backend: str) -> str:
    return f"unmix {precision} ({BACKEND_NAMES[backend]})"


def refined_method(method: str, stereo: str = "mid") -> str:
    """The refined twin of `method`'s row; `stereo` says how the model saw a stereo song (`Separator`'s modes)."""
    return f"{method} + refinement" + (" (per-channel)" if stereo == "per-channel" else "")


def load_torch_models(specs: tuple[str, ...], stems: list[str], *, vqvae: bool, trust_pickle: bool) -> dict:
    """PyTorch separators per stem from export's checkpoint sources: phase-2 runs (`vqvae=False`), or
    phase-1 VQ-VAEs whose own encoder (SE) serves as the encoder (`vqvae=True`, the ceiling)."""
    from unmix.export.sources import paths_per_stem, separator_from_run, separator_from_vqvae

    option = "--checkpoint" if vqvae else "--separator"
    paths = paths_per_stem(list(specs), stems, option)
    if vqvae:
        return {
            stem: separator_from_vqvae(path, None, stem, trust_pickle=trust_pickle)[0] for stem, path in paths.items()
        }
    return {stem: separator_from_run(path, stem)[0] for stem, path in paths.items()}


class Scores:
    """SDR per method, song and stem (and BSSEval v4 where asked).

    The paper's SDR (eq. 2) over the whole stereo song (both channels, as the Music Demixing Challenge 2021 SDR),
    then averaged over songs; 'total' is the mean over stems, as in the paper's Table 1.
    """

    def __init__(self) -> None:
        self.sdr: dict[str, dict[str, dict[str, float]]] = {}
        self.bsseval: dict[str, dict[str, dict[str, float]]] = {}

    def add(self, method: str, song: str, truth: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> None:
        self.sdr.setdefault(method, {})[song] = {stem: sdr(truth[stem], estimates[stem]) for stem in estimates}

    def add_bsseval(self, method: str, song: str, scores: dict[str, float]) -> None:
        self.bsseval.setdefault(method, {})[song] = scores

    def table(self) -> list[dict]:
        rows = []
        for method, songs in self.sdr.items():
            stems = list(next(iter(songs.values())))
            mean = {stem: float(np.mean([song[stem] for song in songs.values()])) for stem in stems}
            row = {
                "method": method,
                "kind": method_kind(method),
                "mean": mean,
                "total": float(np.mean(list(mean.values()))),
                "songs": songs,
            }
            if method in self.bsseval:
                per_song = self.bsseval[method]
                row["bsseval_median"] = {
                    stem: float(np.nanmedian([s[stem] for s in per_song.values()])) for stem in stems
                }
                row["bsseval_songs"] = per_song
            rows.append(row)
        return rows


Excerpt = tuple[np.ndarray, np.ndarray | None]  # (audio, codes) of one stem on one song's excerpt


@dataclass
class ExcerptSums:
    """One method's and stem's excerpts against the reference's, summed over songs: the figures of all songs'
    excerpts joined, without keeping them."""

    signal: float = 0.0  # Σ reference²
    noise: float = 0.0  # Σ (reference − candidate)²
    max_abs: float = 0.0
    same_codes: int = 0
    codes: int = 0  # latent frames compared; 0: codes missing on either side

    def add(self, reference: Excerpt, candidate: Excerpt) -> None:
        reference_audio = np.asarray(reference[0], np.float64).reshape(-1)
        difference = reference_audio - np.asarray(candidate[0], np.float64).reshape(-1)
        self.signal += float(np.sum(reference_audio**2))
        self.noise += float(np.sum(difference**2))
        self.max_abs = max(self.max_abs, float(np.abs(difference).max(initial=0.0)))
        if reference[1] is not None and candidate[1] is not None:
            self.same_codes += int(np.count_nonzero(np.asarray(reference[1]) == np.asarray(candidate[1])))
            self.codes += np.asarray(reference[1]).size

    def figures(self) -> dict:
        """As `compare_stem` gives them (snr as `unmix.export.parity.snr`), less the SDR change."""
        snr_db = float("inf") if self.noise == 0 else float(10 * np.log10(self.signal / self.noise))
        return {
            "max_abs": self.max_abs,
            "snr_db": snr_db,
            "code_agreement": self.same_codes / self.codes if self.codes else None,
        }


class FidelityExcerpts:
    """First-chunk excerpts of every channel of every song: each method's outputs and codes against the
    reference method's. A song's excerpts are kept only until `end_song` folds them into per-stem sums, so
    memory stays flat however many songs are scored."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.song: dict[str, dict[str, Excerpt]] = {}  # method → stem → excerpt, of the current song
        self.sums: dict[str, dict[str, ExcerptSums]] = {}  # method → stem → sums over the songs ended

    def add(self, method: str, stem: str, audio: np.ndarray, codes: np.ndarray | None) -> None:
        self.song.setdefault(method, {})[stem] = (audio, codes)

    def end_song(self) -> None:
        """Fold the current song's excerpts into the sums (a song without the reference's adds nothing)."""
        reference = self.song.pop(self.reference, {})
        for method, excerpts in self.song.items():
            for stem, excerpt in excerpts.items():
                if stem in reference:
                    self.sums.setdefault(method, {}).setdefault(stem, ExcerptSums()).add(reference[stem], excerpt)
        self.song = {}

    def compare(self, method: str) -> dict[str, dict]:
        """{stem: figures} of `method` against the reference, over the songs ended."""
        return {stem: sums.figures() for stem, sums in self.sums.get(method, {}).items()}


def backend_of(settings: SdrSettings, precision: str) -> str:
    """The backend `settings.backend` stands for at `precision` (auto resolves as the runtime resolves it)."""
    from unmix.runtime.backends import resolve_backend
    from unmix.runtime.engines import parse_device

    return resolve_backend(settings.backend, parse_device(settings.device), precision)


def default_precisions(available: list[str], device: str) -> tuple[str, ...]:
    wanted = ("fp32", "fp16") if device.startswith("cuda") else ("fp32", "int8")
    return tuple(p for p in wanted if p in available)


@dataclass
class Methods:
    """What runs besides the baselines: the bundle per precision, the PyTorch model, the ceiling."""

    runtime: dict  # precision → unmix.runtime.Separator (raw, per channel)
    refiners: dict  # precision → unmix.runtime.Separator refining as `unmix separate` does (stereo "mid" only)
    graphs: dict  # precision → BundleGraphs (ONNX Runtime backends: the codes for the fidelity figures)
    pytorch: dict  # stem → StemSeparator (the model in PyTorch)
    ceiling: dict  # stem → StemSeparator whose encoder is SE (phase-1 VQ-VAE)
    bundle: Path | None
    stems: list[str]
    skipped: list[str]

    @property
    def refined(self) -> bool:
        """Whether the runtime rows also get their refined twin (the masks need every stem's estimate)."""
        return covers_the_mixture(self.stems)

    def count(self, settings: SdrSettings) -> int:
        paper_style = bool(self.pytorch) and settings.paper_style
        runtime = len(self.runtime) * (1 + self.refined) + len(self.refiners)
        return runtime + bool(self.pytorch) + paper_style + bool(self.ceiling) + 2 * settings.baselines


def torch_device_problem(device: str) -> str | None:
    """Why PyTorch cannot run on `device` here, or None."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device here"
    return None


def load_methods(settings: SdrSettings, threads: int) -> tuple[Methods, dict]:
    """The runnable methods (unavailable ones noted in `skipped`) and the bundle's manifest facts."""
    from unmix.runtime import BackendError, Separator, read_manifest, resolve_bundle

    skipped: list[str] = []
    runtime: dict[str, Separator] = {}
    refiners: dict[str, Separator] = {}
    bundle: Path | None = None
    model: dict[str, Any] = {"bundle": None, "precisions": [], "provenance": {}}  # JSON facts of mixed types
    stems = list(STEMS)
    if settings.bundle is not None:
        bundle = resolve_bundle(settings.bundle)
        manifest = read_manifest(bundle)
        stems = list(manifest.stems)
    if settings.stems:
        if unknown := [stem for stem in settings.stems if stem not in stems]:
            raise ValueError(f"--stems: {', '.join(unknown)} not among the stems to score ({', '.join(stems)})")
        stems = [stem for stem in stems if stem in settings.stems]
    if bundle is not None:
        precisions = settings.precisions or default_precisions(manifest.precisions, settings.device)
        model = {
            "bundle": str(bundle),
            "precisions": list(precisions),
            "provenance": manifest.provenance,
            "refinement": manifest.refinement,
        }
        for precision in precisions:
            try:
                runtime[precision] = Separator.from_bundle(
                    bundle,
                    device=settings.device,
                    backend=settings.backend,
                    threads=threads,
                    precision=precision,
                    stems=stems,
                    refine=False,  # the raw estimates (the per-channel refined twin is computed from them)
                )
                if settings.stereo == "mid" and covers_the_mixture(stems):
                    refiners[precision] = Separator.from_bundle(
                        bundle,
                        device=settings.device,
                        backend=settings.backend,
                        threads=threads,
                        precision=precision,
                        stems=stems,
                        refine=True,
                        stereo="mid",
                    )
            except BackendError as error:
                skipped.append(f"{model_method(precision, backend_of(settings, precision))}: unavailable — {error}")
    load = lambda specs, vqvae: load_torch_models(specs, stems, vqvae=vqvae, trust_pickle=settings.trust_pickle)  # noqa: E731
    separator_specs, model["pytorch_weights"] = settings.separator, "--separator" if settings.separator else None
    from_provenance = not separator_specs and bundle is not None and settings.provenance_pytorch
    # `bundle is not None` again: from_provenance implies it, but mypy does not follow the flag
    if from_provenance and bundle is not None and (sources := provenance_checkpoints(bundle)):
        separator_specs = tuple(f"{stem}={path}" for stem, path in sources.items() if stem in stems)
        model["pytorch_weights"] = "the bundle's source checkpoints, named in its provenance (sha256 checked)"
    checkpoint_specs = settings.checkpoint
    if (separator_specs or checkpoint_specs) and (problem := torch_device_problem(settings.device)):
        skipped.append(f"{PYTORCH}, {CEILING}: unavailable — {problem}")
        separator_specs = checkpoint_specs = ()
    else:
        if not separator_specs:
            skipped.append(f"{PYTORCH}: not run — give the model's PyTorch checkpoints with --separator")
        if not checkpoint_specs:
            skipped.append(f"{CEILING}: not run — give the phase-1 VQ-VAE checkpoints with --checkpoint")
    if settings.paper_style and not separator_specs:
        skipped.append(f"{PAPER_STYLE}: not run — it needs the PyTorch model")
    pytorch = load(separator_specs, False) if separator_specs else {}
    ceiling = load(checkpoint_specs, True) if checkpoint_specs else {}
    graphs = {}
    compared = len(runtime) > 1 or pytorch  # one precision and no PyTorch model: nothing to hold it against
    if settings.backend in ("auto", "ort") and compared and bundle is not None:  # no bundle: no graphs
        stored = manifest.models  # bf16 is computed from the fp32 graphs, on OpenVINO
        graphs = {p: BundleGraphs(bundle, p, stems, settings.device, threads) for p in runtime if p in stored}
    methods = Methods(runtime, refiners, graphs, pytorch, ceiling, bundle, stems, skipped)
    if runtime and not methods.refined:
        skipped.append("unmix … + refinement: not run — refinement needs all four stems scored")
    if not methods.count(settings):
        raise ValueError("nothing to score: no runnable bundle precision, no checkpoints, and baselines switched off")
    return methods, model | {"stems": stems}


def song_estimates(
    song: Song, methods: Methods, settings: SdrSettings, excerpts: FidelityExcerpts
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(method, {stem: estimate (frames, channels)}) for every method, one at a time (memory: one method's
    estimates), recording the fidelity excerpts on the way. The methods, in order:

      unmix <precision>     the bundle through the runtime (each channel separated, exact chunking): the paper's
                            output, each decoder's waveform
      ... + refinement      the same estimates refined as `unmix separate` does by default (drums' power mask,
                            then a spatial Wiener filter, over the mixture's STFT; unmix.runtime.refinement);
                            needs all four stems
      PyTorch fp32          the same model in PyTorch (whole-signal exact), with --separator
      PyTorch paper-style   the paper's non-overlapping PAPER_CHUNK-sample chunks per channel, with --paper-style
      VQ-VAE ceiling        SE → nearest code → SD on the *true* stem (phase-1 checkpoints, --checkpoint): what
                            the stem's codebook and decoder can reproduce at best
      ScaledMixture         every stem = mixture / 4 (lower baseline)
      IRM oracle            ideal ratio mask |S_j|² / Σ|S_k|², STFT Hann 4096 / hop 1024 (upper reference)
    """
    excerpt = song.mixture[:PAPER_CHUNK].T  # (channels, frames)
    for precision, separator in methods.runtime.items():
        method = model_method(precision, backend_of(settings, precision))
        estimates = separator.separate(song.mixture, song.sample_rate)
        yield method, estimates
        if methods.refined:
            stereo = "per-channel" if precision in methods.refiners else "mid"  # mid: what a mono song gets anyway
            yield (
                refined_method(method, stereo),
                refine(
                    song.mixture, estimates, weights=separator.refinement_weights, spread=separator.refinement_spread
                ),
            )
        del estimates
        if precision in methods.refiners:
            yield refined_method(method), methods.refiners[precision].separate(song.mixture, song.sample_rate)
        if precision in methods.graphs:  # the graphs themselves: the codes the runtime keeps to itself
            for stem, (audio, codes) in methods.graphs[precision](excerpt).items():
                excerpts.add(method, stem, audio, codes)
    if methods.pytorch:
        estimates = {}
        for stem, model in methods.pytorch.items():
            audio, codes = exact_separate(model, song.mixture.T, settings.device)
            estimates[stem] = audio.T
            whole_song = excerpt.shape[1] == audio.shape[1]  # a song no longer than the excerpt: the same run
            excerpts.add(
                PYTORCH, stem, *((audio, codes) if whole_song else exact_separate(model, excerpt, settings.device))
            )
        yield PYTORCH, estimates
        if settings.paper_style:
            paths = {stem: PaperStylePath(model, settings.device) for stem, model in methods.pytorch.items()}
            yield PAPER_STYLE, {s: np.stack([path(c) for c in song.mixture.T], axis=1) for s, path in paths.items()}
    if methods.ceiling:
        truth = song.stems
        yield CEILING, {s: exact_separate(m, truth[s].T, settings.device)[0].T for s, m in methods.ceiling.items()}
    if settings.baselines:
        yield SCALED_MIXTURE, scaled_mixture_estimates(song.mixture, methods.stems)
        masked = ideal_ratio_mask(song.mixture, song.stems)  # the mask's denominator needs every stem
        yield IRM, {stem: masked[stem] for stem in methods.stems}


def evaluate_sdr(settings: SdrSettings, *, command: str = "", progress: bool = True) -> dict:
    """Score every method on every song; returns the report (schema `unmix-bench/sdr`)."""
    from tqdm import tqdm

    created, load_at_start, revision_at_start = now(), load_average(), git_revision()
    threads = settings.threads or usable_cores()
    folders = subset_songs(settings.data, settings.subset)[: settings.songs]
    methods, model = load_methods(settings, threads)
    scores, excerpts = Scores(), FidelityExcerpts(fidelity_reference(bool(methods.pytorch), settings))
    museval_error, seconds = None, 0.0
    with tqdm(total=len(folders) * methods.count(settings), disable=not progress, unit="method", desc="sdr") as bar:
        for folder in folders:
            song = read_song(folder, max_seconds=settings.max_seconds)
            seconds += song.seconds
            for method, estimates in song_estimates(song, methods, settings, excerpts):
                scores.add(method, song.name, song.stems, estimates)
                if settings.museval and museval_error is None:
                    try:
                        truth = {stem: song.stems[stem] for stem in estimates}
                        scores.add_bsseval(method, song.name, bsseval_sdr(truth, estimates, song.sample_rate))
                    except Exception as error:  # museval is optional and needs ffmpeg merely to import
                        museval_error = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                bar.update(1)
            excerpts.end_song()
    skipped = methods.skipped
    if museval_error:
        skipped.append(
            f"BSSEval v4 not computed: museval failed ({museval_error}); pip install 'unmix[eval]' and ffmpeg"
        )
    table = scores.table()
    settings_record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    return {
        "schema": "unmix-bench/sdr",
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "command": command,
        "machine": machine_info(threads, load_at_start, revision_at_start),
        "settings": settings_record | {"precisions": model["precisions"], "threads": threads},
        "data": {
            "root": str(settings.data),
            "subset": settings.subset,
            "songs": [folder.name for folder in folders],
            "seconds": round(seconds, 2),
        },
        "model": model,
        "metric": "the paper's SDR (eq. 2), global over each whole song and both channels (as the MDX 2021 SDR); "
        "mean over songs; total = mean over stems",
        "methods": table,
        "fidelity": sdr_fidelity(
            table, excerpts, {p: model_method(p, backend_of(settings, p)) for p in methods.runtime}
        ),
        "skipped": skipped,
    }


def fidelity_reference(have_pytorch: bool, settings: SdrSettings) -> str:
    """The method the fidelity figures compare against: the PyTorch model when given, else the bundle's fp32."""
    return PYTORCH if have_pytorch else model_method("fp32", backend_of(settings, "fp32"))


def sdr_fidelity(table: list[dict], excerpts: FidelityExcerpts, runtime: dict[str, str]) -> dict:
    """Per precision: code agreement and SNR on the excerpts (the first PAPER_CHUNK samples of every channel of
    every song), and the whole-song SDR change, against `excerpts.reference`: the PyTorch model, or without
    --separator the bundle's fp32 graph. `runtime`: precision → its method's name."""
    means = {row["method"]: row["mean"] for row in table}
    against = excerpts.reference
    rows: list[dict] = []
    if not runtime:
        return {"reference": "—", "rows": rows, "note": "No bundle was scored, so there is nothing to compare"}
    if against not in means:
        return {"reference": against, "rows": rows, "note": "No fidelity figures: the comparison method did not run"}
    for method in runtime.values():
        if method == against or method not in means:
            continue
        figures = excerpts.compare(method)
        for stem, sdr_value in means[method].items():
            row = {"method": method, "stem": stem, "song_sdr_delta_db": sdr_value - means[against][stem]}
            row |= figures.get(stem, {"code_agreement": None, "snr_db": None, "max_abs": None})
            rows.append(row)
    note = (
        "Code agreement, SNR and max abs diff on the first 393216 samples of every channel of every song "
        "(bundle graphs on ONNX Runtime); SDR Δ = whole-song SDR minus the reference's"
    )
    return {"reference": against, "rows": rows, "note": note}
