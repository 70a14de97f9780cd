"""`unmix-export`: trained checkpoints → a validated deploy bundle (ONNX per stem, parity report, int8, fp16, TensorRT).

Sources (one of):
  --checkpoint SPEC   our phase-2 separator: a checkpoint folder or the training run folder holding it
  --vqvae SPEC        a VQ-VAE (Jukebox vqvae.pth.tar, the paper's phase-1 pickles, or ours) as codebook + SD,
                      and as ME unless --encoder SPEC gives the mixture encoder (the paper's phase-2 pickles, or ours)
For several stems, SPEC is `stem=PATH` (repeat the option, one per stem) or one PATH containing `{stem}`
(e.g. runs/phase2-{stem}); a plain PATH serves every stem.

--refinement-data ROOT fits the runtime refinement's band weights on ROOT's training songs (a four-stem bundle)
and stores them in the manifest, with the power spread --refinement-spread gives (e.g. other=3); without a source
it does only that, to the existing bundle -o names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from unmix.runtime.engine_cache import EngineCacheError, gpu_info, import_tensorrt
from unmix.runtime.manifest import STEMS, BundleError
from unmix.runtime.refinement import check_spread
from unmix.train.config import resolve_config

from .audio import calibration_chunks, load_parity_audio
from .bundle import export_bundle
from .checks import ExportError
from .sources import paths_per_stem, separator_from_run, separator_from_vqvae
from .tensorrt import build_bundle_engines

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def parse_stems(stem: str | None, stems: str | None) -> list[str]:
    """`--stem X` or `--stems all|a,b`; stems are kept in the canonical order when they are the usual four."""
    if (stem is None) == (stems is None):
        raise ExportError("give exactly one of --stem NAME or --stems all|NAME,NAME")
    names = list(STEMS) if stems == "all" else [s.strip() for s in (stems or stem).split(",") if s.strip()]
    unknown = [name for name in names if name not in STEMS]
    if unknown or not names or len(set(names)) != len(names):
        raise ExportError(f"stems must be distinct names among {', '.join(STEMS)} (got {', '.join(names) or 'none'})")
    return names


@app.command()
def main(
    ctx: typer.Context,
    out: Path = typer.Option(..., "-o", "--out", help="bundle folder to write"),
    stem: str = typer.Option(None, "--stem", help="one stem: drums, bass, other or vocals"),
    stems: str = typer.Option(None, "--stems", help="'all' or a comma list"),
    checkpoint: list[str] = typer.Option(None, "--checkpoint", help="our phase-2 checkpoint or run folder (SPEC)"),
    vqvae: list[str] = typer.Option(None, "--vqvae", help="VQ-VAE file or folder: codebook + SD (SPEC)"),
    encoder: list[str] = typer.Option(None, "--encoder", help="mixture encoder ME for --vqvae (SPEC)"),
    config: str = typer.Option(None, "--config", help="model config of foreign files: paper, tiny or FILE.json"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow full unpickling of foreign files (can run code)"),
    audio: Path = typer.Option(None, "--audio", help="parity audio: MUSDB-layout folder, audio folder or file (default: a synthetic song)"),
    parity_segments: int = typer.Option(4, "--parity-segments", min=1, help="audio segments for the parity check"),
    parity_seconds: float = typer.Option(6.0, "--parity-seconds", min=0.1, help="length of each parity segment"),
    int8: bool = typer.Option(False, "--int8", help="also an int8 (static QDQ) copy for CPUs; needs --calibration"),
    calibration: Path = typer.Option(None, "--calibration", help="MUSDB-layout folder of real mixtures for int8 calibration"),
    calibration_chunks_count: int = typer.Option(32, "--calibration-chunks", min=1, help="calibration chunks"),
    calibration_seconds: float = typer.Option(2.0, "--calibration-seconds", min=0.1, help="seconds per calibration chunk"),
    calibration_method: str = typer.Option(
        "minmax", "--calibration-method",
        help="minmax, entropy or percentile (the last two hold every activation in memory: ~0.5 GB per second of audio for the paper's model)",
    ),
    fp16: bool = typer.Option(False, "--fp16", help="also fp16 graphs for GPUs (fp32 vq island)"),
    fused: bool = typer.Option(False, "--fused", help="also one graph with every stem as an output"),
    ort_optimized: bool = typer.Option(True, "--ort-optimized/--no-ort-optimized", help="ONNX Runtime EXTENDED-optimised copies"),
    trt: bool = typer.Option(False, "--trt", help="build TensorRT engines from the fp16 graphs (implies --fp16; untested)"),
    max_sdr_loss: float = typer.Option(0.2, "--max-sdr-loss", help="dB of SDR int8/fp16 may lose against PyTorch"),
    force: bool = typer.Option(False, "--force", help="write int8/fp16 graphs even when they fail the SDR gate"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing bundle folder"),
    note: str = typer.Option(None, "--note", help="free text stored in the manifest's provenance"),
    attach: list[str] = typer.Option(
        None, "--attach", help="NAME=FILE: a JSON or JSON-lines file stored in the manifest's provenance under NAME"
    ),
    refinement_data: Path = typer.Option(
        None, "--refinement-data", help="MUSDB-layout folder whose training songs fit the refinement's band weights"
    ),
    refinement_songs: str = typer.Option(
        "0:24", "--refinement-songs", help="START:STOP of the training songs (by name); best ones unseen in training"
    ),
    refinement_seconds: float = typer.Option(15.0, "--refinement-seconds", min=1.0, help="seconds from each middle"),
    refinement_bands: int = typer.Option(16, "--refinement-bands", min=1, help="log-spaced frequency bands"),
    refinement_spread: str = typer.Option(
        "", "--refinement-spread", help="STEM=BINS,...: average those stems' powers over BINS (odd) bins, e.g. other=3"
    ),
) -> None:
    """Export separators to a deploy bundle and prove it computes what PyTorch computes."""
    try:
        refinement = None
        if refinement_data is not None:
            first, stop = parse_song_range(refinement_songs)
            refinement = {"data": refinement_data, "first": first, "count": stop - first,
                          "seconds": refinement_seconds, "bands": refinement_bands,
                          "spread": parse_spread(refinement_spread)}
            if not checkpoint and not vqvae:  # refit an existing bundle
                _refit(out, refinement)
                return
        names = parse_stems(stem, stems)
        if refinement and set(names) != set(STEMS):  # before the export, not after it
            raise ExportError("--refinement-data needs all four stems (--stems all): the refinement splits the mixture")
        attachments = dict(map(read_attachment, attach or ()))
        if out.exists() and not overwrite:
            raise ExportError(f"{out} exists; choose another -o or pass --overwrite")
        if bool(checkpoint) == bool(vqvae):
            raise ExportError("give exactly one source: --checkpoint (our runs) or --vqvae [--encoder]")
        if encoder and not vqvae:
            raise ExportError("--encoder goes with --vqvae")
        if int8 != (calibration is not None):
            raise ExportError("--int8 and --calibration ROOT go together (int8 is calibrated on real mixtures)")
        if trt:  # fail before exporting anything when TensorRT or the GPU is missing
            import_tensorrt()
            gpu_info()
        model_config = resolve_config(config) if config else None
        separators, sources = {}, {}
        if checkpoint:
            for name, path in paths_per_stem(checkpoint, names, "--checkpoint").items():
                separators[name], sources[name] = separator_from_run(path, name)
        else:
            encoders = paths_per_stem(encoder, names, "--encoder") if encoder else {}
            for name, path in paths_per_stem(vqvae, names, "--vqvae").items():
                separators[name], sources[name] = separator_from_vqvae(
                    path, encoders.get(name), name, trust_pickle=trust_pickle, config=model_config
                )
        model = next(iter(separators.values())).mixture_encoder.config
        parity_audio = load_parity_audio(
            audio, model.sample_rate, model.hop_length, segments=parity_segments, seconds=parity_seconds
        )
        chunks = None
        if calibration is not None:
            chunks = calibration_chunks(
                calibration, model.sample_rate, model.hop_length, count=calibration_chunks_count, seconds=calibration_seconds
            )
        given = {name: value for name, value in ctx.params.items() if value not in (None, False, [], ())}
        provenance = {"sources": sources, "export_options": json.loads(json.dumps(given, default=str))}
        if note:
            provenance["note"] = note
        provenance |= attachments
        typer.echo(f"exporting {', '.join(names)}; parity on {parity_audio.description}", err=True)
        bundle = export_bundle(
            separators,
            out,
            provenance=provenance,
            parity_audio=parity_audio,
            int8_calibration=chunks,
            calibration_method=calibration_method,
            fp16=fp16 or trt,
            fused=fused,
            ort_optimized=ort_optimized,
            max_sdr_loss=max_sdr_loss,
            force=force,
            overwrite=overwrite,
        )
        if trt:
            _build_engines(bundle)
        if refinement:
            _refit(bundle, refinement)
    except (ExportError, BundleError, EngineCacheError, ValueError) as error:
        fail(str(error))
    typer.echo((bundle / "parity.md").read_text())
    typer.echo(f"wrote {bundle}")


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


def _refit(bundle: Path, options: dict) -> None:
    from .refinement_fit import refit_bundle

    typer.echo(f"fitting the refinement's band weights on {options['count']} songs of {options['data']}", err=True)
    entry = refit_bundle(bundle, **options)
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


def _build_engines(bundle: Path) -> None:
    try:
        for stem, engine in build_bundle_engines(bundle).items():
            typer.echo(f"TensorRT engine for {stem}: {engine}", err=True)
    except (EngineCacheError, ExportError) as error:
        shutil.rmtree(bundle, ignore_errors=True)  # the user asked for engines: no bundle without them
        raise ExportError(f"TensorRT: {error}") from None


if __name__ == "__main__":
    app()
