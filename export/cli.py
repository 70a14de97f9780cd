"""`unmix-export`: trained checkpoints → a validated deploy bundle (ONNX per stem, parity report, int8, fp16, TensorRT).

The separators come from our phase-2 runs (--checkpoint), from VQ-VAE and encoder files (--vqvae, --encoder), or from
an existing bundle's fp32 graphs (--bundle, to add int8 or fp16 graphs to it); --refinement-data also fits the runtime
refinement's band weights, or, without a source, refits an existing bundle.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from unmix.runtime.engine_cache import EngineCacheError, gpu_info, import_tensorrt
from unmix.runtime.manifest import STEMS, BundleError, Manifest, read_manifest
from unmix.runtime.refinement import check_spread
from unmix.train.config import resolve_config
from unmix.train.model import StemSeparator

from .audio import ParityAudio, calibration_chunks, load_parity_audio
from .bundle import export_bundle
from .checks import ExportError
from .sources import paths_per_stem, separator_from_bundle, separator_from_run, separator_from_vqvae
from .tensorrt_engines import build_bundle_engines

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


@dataclass(frozen=True)
class ExportOptions:
    """Everything `unmix-export` was asked to do: its options, one field each, named after them.

    Built by the command from its options (the defaults are these); `run(options)` does the work. Nothing is
    checked here: `run` checks the combinations and raises `ExportError` naming the option at fault.
    """

    out: Path
    stem: str | None = None
    stems: str | None = None
    checkpoint: tuple[str, ...] = ()
    vqvae: tuple[str, ...] = ()
    encoder: tuple[str, ...] = ()
    bundle: Path | None = None
    config: str | None = None
    trust_pickle: bool = False
    audio: Path | None = None
    parity_segments: int = 4
    parity_seconds: float = 6.0
    int8: bool = False
    calibration: Path | None = None
    calibration_chunks_count: int = 32
    calibration_seconds: float = 2.0
    calibration_method: str = "nncf"
    fp16: bool = False
    fused: bool = False
    ort_optimized: bool = True
    trt: bool = False
    max_sdr_loss: float = 0.1
    force: bool = False
    overwrite: bool = False
    note: str | None = None
    attach: tuple[str, ...] = ()
    refinement_data: Path | None = None
    refinement_songs: str = "0:24"
    refinement_seconds: float = 15.0
    refinement_bands: int = 16
    refinement_spread: str = ""

    def __post_init__(self) -> None:
        # Repeatable options arrive as lists (or None when not given); paths may arrive as strings.
        for name in ("checkpoint", "vqvae", "encoder", "attach"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        for name in ("out", "bundle", "audio", "calibration", "refinement_data"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    @property
    def refit_only(self) -> bool:
        """Only fit the refinement of the existing bundle `out` (no source to export)."""
        return self.refinement_data is not None and not (self.checkpoint or self.vqvae or self.bundle)

    def given(self) -> dict:
        """The options that say something (not None, False, zero or empty), JSON-ready: the manifest's record of them."""
        given = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) not in (None, False, [], ())
        }
        return json.loads(json.dumps(given, default=str))


@dataclass(frozen=True)
class RefinementFit:
    """What `--refinement-*` asks of the refinement's band-weight fit (see `refit_bundle`).

    --refinement-data ROOT fits the band weights on ROOT's training songs (a four-stem bundle) and stores them in
    the manifest, with the power spread --refinement-spread gives (e.g. other=3); without a source it does only
    that, to the existing bundle -o names.
    """

    data: Path
    first: int
    count: int
    seconds: float
    bands: int
    spread: dict[str, int]


_DEFAULT: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(ExportOptions)}


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def main(
    out: Path = typer.Option(..., "-o", "--out", help="bundle folder to write"),
    stem: str = typer.Option(_DEFAULT["stem"], "--stem", help="one stem: drums, bass, other or vocals"),
    stems: str = typer.Option(_DEFAULT["stems"], "--stems", help="'all' or a comma list"),
    checkpoint: list[str] = typer.Option(None, "--checkpoint", help="our phase-2 checkpoint or run folder (SPEC)"),
    vqvae: list[str] = typer.Option(None, "--vqvae", help="VQ-VAE file or folder: codebook + SD (SPEC)"),
    encoder: list[str] = typer.Option(None, "--encoder", help="mixture encoder ME for --vqvae (SPEC)"),
    bundle: Path = typer.Option(
        _DEFAULT["bundle"], "--bundle", help="an existing bundle: its fp32 graphs are the separators (DIR)"
    ),
    config: str = typer.Option(
        _DEFAULT["config"], "--config", help="model config of foreign files: paper, tiny or FILE.json"
    ),
    trust_pickle: bool = typer.Option(
        _DEFAULT["trust_pickle"], "--trust-pickle", help="allow full unpickling of foreign files (can run code)"
    ),
    audio: Path = typer.Option(
        _DEFAULT["audio"],
        "--audio",
        help="parity audio: MUSDB-layout folder, audio folder or file (default: a synthetic song)",
    ),
    parity_segments: int = typer.Option(
        _DEFAULT["parity_segments"], "--parity-segments", min=1, help="audio segments for the parity check"
    ),
    parity_seconds: float = typer.Option(
        _DEFAULT["parity_seconds"], "--parity-seconds", min=0.1, help="length of each parity segment"
    ),
    int8: bool = typer.Option(
        _DEFAULT["int8"], "--int8", help="also an int8 (static QDQ) copy for CPUs; needs --calibration"
    ),
    calibration: Path = typer.Option(
        _DEFAULT["calibration"], "--calibration", help="MUSDB-layout folder of real mixtures for int8 calibration"
    ),
    calibration_chunks_count: int = typer.Option(
        _DEFAULT["calibration_chunks_count"], "--calibration-chunks", min=1, help="calibration chunks"
    ),
    calibration_seconds: float = typer.Option(
        _DEFAULT["calibration_seconds"], "--calibration-seconds", min=0.1, help="seconds per calibration chunk"
    ),
    calibration_method: str = typer.Option(
        _DEFAULT["calibration_method"],
        "--calibration-method",
        help="nncf (NNCF post-training quantization), or ONNX Runtime's minmax, entropy or percentile (the last two "
        "hold every activation in memory: ~0.5 GB per second of audio for the paper's model)",
    ),
    fp16: bool = typer.Option(_DEFAULT["fp16"], "--fp16", help="also fp16 graphs for GPUs (fp32 vq island)"),
    fused: bool = typer.Option(_DEFAULT["fused"], "--fused", help="also one graph with every stem as an output"),
    ort_optimized: bool = typer.Option(
        _DEFAULT["ort_optimized"], "--ort-optimized/--no-ort-optimized", help="ONNX Runtime EXTENDED-optimised copies"
    ),
    trt: bool = typer.Option(
        _DEFAULT["trt"], "--trt", help="build TensorRT engines from the fp16 graphs (implies --fp16; untested)"
    ),
    max_sdr_loss: float = typer.Option(
        _DEFAULT["max_sdr_loss"], "--max-sdr-loss", help="dB of SDR int8/fp16 may lose against PyTorch"
    ),
    force: bool = typer.Option(
        _DEFAULT["force"], "--force", help="write int8/fp16 graphs even when they fail the SDR gate"
    ),
    overwrite: bool = typer.Option(_DEFAULT["overwrite"], "--overwrite", help="replace an existing bundle folder"),
    note: str = typer.Option(_DEFAULT["note"], "--note", help="free text stored in the manifest's provenance"),
    attach: list[str] = typer.Option(
        None, "--attach", help="NAME=FILE: a JSON or JSON-lines file stored in the manifest's provenance under NAME"
    ),
    refinement_data: Path = typer.Option(
        _DEFAULT["refinement_data"],
        "--refinement-data",
        help="MUSDB-layout folder whose training songs fit the refinement's band weights",
    ),
    refinement_songs: str = typer.Option(
        _DEFAULT["refinement_songs"],
        "--refinement-songs",
        help="START:STOP of the training songs (by name); best ones unseen in training",
    ),
    refinement_seconds: float = typer.Option(
        _DEFAULT["refinement_seconds"], "--refinement-seconds", min=1.0, help="seconds from each middle"
    ),
    refinement_bands: int = typer.Option(
        _DEFAULT["refinement_bands"], "--refinement-bands", min=1, help="log-spaced frequency bands"
    ),
    refinement_spread: str = typer.Option(
        _DEFAULT["refinement_spread"],
        "--refinement-spread",
        help="STEM=BINS,...: average those stems' powers over BINS (odd) bins, e.g. other=3",
    ),
) -> None:
    """Export separators to a deploy bundle and prove it computes what PyTorch computes."""
    options = ExportOptions(
        out=out,
        stem=stem,
        stems=stems,
        checkpoint=tuple(checkpoint or ()),
        vqvae=tuple(vqvae or ()),
        encoder=tuple(encoder or ()),
        bundle=bundle,
        config=config,
        trust_pickle=trust_pickle,
        audio=audio,
        parity_segments=parity_segments,
        parity_seconds=parity_seconds,
        int8=int8,
        calibration=calibration,
        calibration_chunks_count=calibration_chunks_count,
        calibration_seconds=calibration_seconds,
        calibration_method=calibration_method,
        fp16=fp16,
        fused=fused,
        ort_optimized=ort_optimized,
        trt=trt,
        max_sdr_loss=max_sdr_loss,
        force=force,
        overwrite=overwrite,
        note=note,
        attach=tuple(attach or ()),
        refinement_data=refinement_data,
        refinement_songs=refinement_songs,
        refinement_seconds=refinement_seconds,
        refinement_bands=refinement_bands,
        refinement_spread=refinement_spread,
    )
    try:
        written = run(options)
    except (ExportError, BundleError, EngineCacheError, ValueError) as error:
        fail(str(error))
    if written is not None:
        typer.echo((written / "parity.md").read_text())
        typer.echo(f"wrote {written}")


def run(options: ExportOptions) -> Path | None:
    """Do what `options` ask: export, prove and write a bundle (then its engines and refinement), or only refit.

    Returns the bundle written, or None when only the refinement of an existing bundle was refitted. Everything
    the options get wrong is an `ExportError` raised before anything is exported.
    """
    refinement = refinement_fit(options)
    if refinement is not None and options.refit_only:
        refit(options.out, refinement)
        return None
    names = check_options(options, refinement)
    attachments = dict(map(read_attachment, options.attach))
    if options.trt:  # fail before exporting anything when TensorRT or the GPU is missing
        import_tensorrt()
        gpu_info()
    inherited = read_manifest(options.bundle) if options.bundle else None  # verified once, here
    separators, sources = load_separators(options, names, inherited)
    provenance = bundle_provenance(options, sources, attachments, inherited)
    bundle = write_bundle(options, separators, provenance)
    if options.trt:
        build_engines(bundle)
    if refinement is not None:
        refit(bundle, refinement)
    elif inherited is not None and inherited.refinement and set(names) == set(STEMS):
        from .refinement_fit import store_refinement

        store_refinement(bundle, inherited.refinement)  # fitted on the same fp32 model: still its own
    return bundle


def check_options(options: ExportOptions, refinement: RefinementFit | None) -> list[str]:
    """The stems to export, once the options' combinations are known to make sense."""
    names = parse_stems(options.stem, options.stems)
    if refinement is not None and set(names) != set(STEMS):  # before the export, not after it
        raise ExportError("--refinement-data needs all four stems (--stems all): the refinement splits the mixture")
    if options.out.exists() and not options.overwrite:
        raise ExportError(f"{options.out} exists; choose another -o or pass --overwrite")
    if sum(map(bool, (options.checkpoint, options.vqvae, options.bundle))) != 1:
        raise ExportError("give exactly one source: --checkpoint (our runs), --vqvae [--encoder] or --bundle")
    if options.bundle is not None and options.bundle.resolve() == options.out.resolve():
        raise ExportError("--bundle and -o name the same folder; write the new bundle beside it")
    if options.encoder and not options.vqvae:
        raise ExportError("--encoder goes with --vqvae")
    if options.config and options.checkpoint:
        raise ExportError("--config goes with --vqvae: our checkpoints carry their own config")
    if options.int8 != (options.calibration is not None):
        raise ExportError("--int8 and --calibration ROOT go together (int8 is calibrated on real mixtures)")
    return names


def parse_stems(stem: str | None, stems: str | None) -> list[str]:
    """`--stem X` or `--stems all|a,b`; stems are kept in the canonical order when they are the usual four."""
    if (stem is None) == (stems is None):
        raise ExportError("give exactly one of --stem NAME or --stems all|NAME,NAME")
    given = stems if stems is not None else stem
    assert given is not None  # exactly one of the two, checked above
    names = list(STEMS) if given == "all" and stems is not None else [s.strip() for s in given.split(",") if s.strip()]
    unknown = [name for name in names if name not in STEMS]
    if unknown or not names or len(set(names)) != len(names):
        raise ExportError(f"stems must be distinct names among {', '.join(STEMS)} (got {', '.join(names) or 'none'})")
    return names


def load_separators(
    options: ExportOptions, names: Sequence[str], bundle: Manifest | None = None
) -> tuple[dict[str, StemSeparator], dict[str, dict]]:
    """Each stem's separator and where it came from: our phase-2 runs (--checkpoint), foreign files (--vqvae) or a
    bundle's fp32 graphs (--bundle DIR, whose manifest is `bundle`).

    --checkpoint SPEC: our phase-2 separator, a checkpoint folder or the training run folder holding it. --vqvae
    SPEC: a VQ-VAE (Jukebox vqvae.pth.tar, the paper's phase-1 pickles, or ours) as codebook + SD, and as ME unless
    --encoder SPEC gives the mixture encoder (the paper's phase-2 pickles, or ours). For several stems, SPEC is
    `stem=PATH` (repeat the option, one per stem) or one PATH containing `{stem}` (e.g. runs/phase2-{stem}); a
    plain PATH serves every stem (`paths_per_stem`).
    """
    model_config = resolve_config(options.config) if options.config else None
    separators, sources = {}, {}
    if options.bundle is not None and bundle is not None:
        for name in names:
            separators[name], sources[name] = separator_from_bundle(options.bundle, bundle, name)
        return separators, sources
    if options.checkpoint:
        for name, path in paths_per_stem(options.checkpoint, names, "--checkpoint").items():
            separators[name], sources[name] = separator_from_run(path, name)
        return separators, sources
    encoders = paths_per_stem(options.encoder, names, "--encoder") if options.encoder else {}
    for name, path in paths_per_stem(options.vqvae, names, "--vqvae").items():
        separators[name], sources[name] = separator_from_vqvae(
            path, encoders.get(name), name, trust_pickle=options.trust_pickle, config=model_config
        )
    return separators, sources


def bundle_provenance(
    options: ExportOptions, sources: dict[str, dict], attachments: dict[str, object], inherited: Manifest | None = None
) -> dict:
    """The manifest's provenance: the sources, the options given, --note and the --attach files; for --bundle, also
    the source bundle's own note and attachments (its training record), unless given anew."""
    record: dict = {"sources": sources, "export_options": options.given()}
    if inherited is not None:
        derived = ("sources", "export_options", "tools", "export")  # what this export writes afresh
        record |= {key: value for key, value in inherited.provenance.items() if key not in derived}
    if options.note:
        record["note"] = options.note
    return record | attachments


def write_bundle(options: ExportOptions, separators: dict[str, StemSeparator], provenance: dict) -> Path:
    """Export the graphs and write the bundle if they pass the parity gate (fp32 exact; int8/fp16 within
    --max-sdr-loss unless --force), on the parity audio and with the int8 calibration the options name."""
    parity_audio, chunks = export_audio(options, next(iter(separators.values())))
    typer.echo(f"exporting {', '.join(separators)}; parity on {parity_audio.description}", err=True)
    return export_bundle(
        separators,
        options.out,
        provenance=provenance,
        parity_audio=parity_audio,
        int8_calibration=chunks,
        calibration_method=options.calibration_method,
        fp16=options.fp16 or options.trt,
        fused=options.fused,
        ort_optimized=options.ort_optimized,
        max_sdr_loss=options.max_sdr_loss,
        force=options.force,
        overwrite=options.overwrite,
    )


def export_audio(options: ExportOptions, separator: StemSeparator) -> tuple[ParityAudio, list | None]:
    """The parity audio and, for --int8, the calibration chunks, at the model's rate and in whole hops."""
    model = separator.mixture_encoder.config
    parity_audio = load_parity_audio(
        options.audio,
        model.sample_rate,
        model.hop_length,
        segments=options.parity_segments,
        seconds=options.parity_seconds,
    )
    chunks = None
    if options.calibration is not None:
        chunks = calibration_chunks(
            options.calibration,
            model.sample_rate,
            model.hop_length,
            count=options.calibration_chunks_count,
            seconds=options.calibration_seconds,
        )
    return parity_audio, chunks


def refinement_fit(options: ExportOptions) -> RefinementFit | None:
    """The band-weight fit --refinement-data asks for (None without it), its other options parsed."""
    if options.refinement_data is None:
        return None
    first, stop = parse_song_range(options.refinement_songs)
    return RefinementFit(
        data=options.refinement_data,
        first=first,
        count=stop - first,
        seconds=options.refinement_seconds,
        bands=options.refinement_bands,
        spread=parse_spread(options.refinement_spread),
    )


def parse_song_range(spec: str) -> tuple[int, int]:
    """`START:STOP` → (START, STOP), 0 ≤ START < STOP."""
    start, colon, stop = spec.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        first = last = -1
    if not colon or not 0 <= first < last:
        raise ExportError(f"--refinement-songs {spec!r}: give START:STOP with 0 ≤ START < STOP, e.g. 20:44")
    return first, last


def parse_spread(spec: str) -> dict[str, int]:
    """`STEM=BINS,...` → {stem: bins} (empty for an empty spec)."""
    spread = {}
    for item in filter(None, spec.split(",")):
        stem, _, bins = item.partition("=")
        try:
            spread[stem] = check_spread(stem, int(bins))
        except ValueError as error:
            message = f"--refinement-spread {item!r}: give STEM=BINS with BINS odd, e.g. other=3"
            raise ExportError(f"{message} ({error})") from None
    return spread


def refit(bundle: Path, fit: RefinementFit) -> None:
    """Fit the refinement's band weights for `bundle` and store them in its manifest."""
    from .refinement_fit import refit_bundle

    typer.echo(f"fitting the refinement's band weights on {fit.count} songs of {fit.data}", err=True)
    entry = refit_bundle(
        bundle, fit.data, first=fit.first, count=fit.count, seconds=fit.seconds, bands=fit.bands, spread=fit.spread
    )
    changes = ", ".join(f"{stem} {db:+.2f} dB" for stem, db in entry["fitted"]["error_change_db"].items())
    typer.echo(f"refinement band weights stored in {bundle}; error on the fitted songs: {changes}")


def read_attachment(spec: str) -> tuple[str, object]:
    """`NAME=FILE` → (NAME, the file's JSON value, or the list of its lines' values for JSON lines)."""
    name, _, path = spec.partition("=")
    if not name or not path:
        raise ExportError(f"--attach {spec!r}: give NAME=FILE")
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ExportError(f"--attach {name}: cannot read {path} ({error.strerror})") from None
    try:
        return name, json.loads(text)
    except ValueError:
        pass
    try:
        return name, [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as error:
        raise ExportError(f"--attach {name}: {path} is neither JSON nor JSON lines ({error})") from None


def build_engines(bundle: Path) -> None:
    """TensorRT engines for the bundle's fp16 graphs; without them (--trt asked for them) no bundle is left."""
    try:
        for stem, engine in build_bundle_engines(bundle).items():
            typer.echo(f"TensorRT engine for {stem}: {engine}", err=True)
    except (EngineCacheError, ExportError) as error:
        shutil.rmtree(bundle, ignore_errors=True)  # the user asked for engines: no bundle without them
        raise ExportError(f"TensorRT: {error}") from None


if __name__ == "__main__":
    app()
