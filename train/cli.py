"""`unmix-train`: inspect checkpoints and run the paper's two training phases."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .checkpoint import CheckpointError, read_checkpoint
from .data import CorpusError
from .options import OptionsError, TrainOptions
from .phases import train_phase1, train_phase2
from .trainer import TrainingInterrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """Inspect checkpoints and train the paper's two phases."""


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="checkpoint file (.pth.tar, .pt) or unmix checkpoint folder"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow full unpickling (can run code)"),
) -> None:
    """Say what a checkpoint is: format, parts, level-0 key count and parameters per part."""
    try:
        checkpoint = read_checkpoint(path, trust_pickle=trust_pickle)
    except CheckpointError as error:
        fail(str(error))
    parameters = checkpoint.parameter_counts()
    report = {
        "path": str(path),
        "format": checkpoint.format,
        "parts": checkpoint.parts,
        "level0_keys": len(checkpoint.state),
        "total_keys": checkpoint.total_keys,
        "parameters": parameters,
        "step": checkpoint.step,
        "config": checkpoint.config.to_dict(),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{path}: {checkpoint.format}, step {checkpoint.step if checkpoint.step is not None else '?'}")
    typer.echo(f"  level-0 keys: {len(checkpoint.state)} (of {checkpoint.total_keys} in the file)")
    for part, count in parameters.items():
        typer.echo(f"  {part:<9} {count:>10,} numbers")


# Options shared by both phases, declared once. Defaults are TrainOptions' (the paper's recipe).
_DEFAULT: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(TrainOptions)}
Data = Annotated[Path, typer.Option(help="data root: MUSDB18-HQ (train/<song>/*.wav) or unmix (train_0 … train_4)")]
Out = Annotated[Path, typer.Option(help="run folder: options, metrics.jsonl, checkpoint/")]
Steps = Annotated[int, typer.Option(help="train until this many steps in total")]
Batch = Annotated[int, typer.Option(help="examples per step and process")]
Chunk = Annotated[int, typer.Option(help="samples per example (a multiple of the hop, 8)")]
Lr = Annotated[float, typer.Option(help="Adam learning rate after warm-up")]
Warmup = Annotated[int, typer.Option(help="linear warm-up steps")]
Clip = Annotated[float, typer.Option(help="gradient-norm clipping")]
EmaDecay = Annotated[
    float, typer.Option(help="decay of the saved weight average (0.9995 spans ~2000 steps: lower it for short runs)")
]
Seed = Annotated[int, typer.Option(help="seed of weights, data order and augmentation")]
SaveEvery = Annotated[int, typer.Option(help="checkpoint every N steps (0: only at the end or on a signal)")]
ValEvery = Annotated[int, typer.Option(help="validate every N steps (0: never)")]
ValSongs = Annotated[int | None, typer.Option(help="songs held out for validation (default: about 10%)")]
ValChunks = Annotated[int, typer.Option(help="chunks scored per validation song")]
ValData = Annotated[
    Path | None,
    typer.Option(
        help="a second validation set, scored beside the first: the test split of a corpus of unseen material"
    ),
]
StatsChunks = Annotated[int, typer.Option(help="chunks measured for the normalisation statistics")]
Remix = Annotated[float, typer.Option(help="probability of remixing an example's stems across songs")]
Shift = Annotated[bool, typer.Option(help="random chunk shift (the paper's aug_shift)")]
Blend = Annotated[bool, typer.Option(help="random L/R blend to mono (the paper's aug_blend)")]
GainDb = Annotated[float, typer.Option(help="each stem's random gain, uniform in ±N dB (0: off)")]
Polarity = Annotated[bool, typer.Option(help="flip each stem's sign with probability 1/2")]
EqDb = Annotated[float, typer.Option(help="each stem through random low/high shelves of up to ±N dB (0: off)")]
Speed = Annotated[float, typer.Option(help="speed each example by a factor in [1-N, 1+N]: tempo and pitch (0: off)")]
Workers = Annotated[int, typer.Option(help="data loading processes per training process")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (under torchrun: the local rank's GPU)")]
Precision = Annotated[str, typer.Option(help="auto (bf16 autocast on CUDA), bf16 or fp32")]
Resume = Annotated[bool, typer.Option(help="continue the run in --out from its checkpoint")]
TrustPickle = Annotated[bool, typer.Option(help="allow full unpickling of Jukebox checkpoints (can run code)")]
Progress = Annotated[bool, typer.Option(help="show a progress bar")]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Options, data and checkpoint errors as one line (exit 2); a signal ends with exit status 128 + its number."""
    try:
        yield
    except TrainingInterrupted as stop:
        typer.echo(str(stop), err=True)
        raise typer.Exit(128 + stop.signal_number) from None
    except (OptionsError, CorpusError, CheckpointError) as error:
        fail(str(error))


@app.command()
def phase1(
    data: Data,
    out: Out,
    stem: Annotated[str, typer.Option(help="drums, bass, other, vocals; mixture; or all (mixtures and stems)")] = (
        "other"
    ),
    config: Annotated[str | None, typer.Option(help="paper, tiny or a JSON file (default: the init's)")] = None,
    init: Annotated[str, typer.Option(help="scratch, jukebox:PATH (Jukebox/paper pickle) or unmix:PATH")] = "scratch",
    steps: Steps = _DEFAULT["steps"],
    batch: Batch = _DEFAULT["batch"],
    chunk: Chunk = _DEFAULT["chunk"],
    lr: Lr = _DEFAULT["lr"],
    warmup: Warmup = _DEFAULT["warmup"],
    clip: Clip = _DEFAULT["clip"],
    ema_decay: EmaDecay = _DEFAULT["ema_decay"],
    seed: Seed = _DEFAULT["seed"],
    save_every: SaveEvery = _DEFAULT["save_every"],
    val_every: ValEvery = _DEFAULT["val_every"],
    val_songs: ValSongs = _DEFAULT["val_songs"],
    val_chunks: ValChunks = _DEFAULT["val_chunks"],
    val_data: ValData = _DEFAULT["val_data"],
    stats_chunks: StatsChunks = _DEFAULT["stats_chunks"],
    remix: Remix = _DEFAULT["remix"],
    shift: Shift = _DEFAULT["shift"],
    blend: Blend = _DEFAULT["blend"],
    gain_db: GainDb = _DEFAULT["gain_db"],
    polarity: Polarity = _DEFAULT["polarity"],
    eq_db: EqDb = _DEFAULT["eq_db"],
    speed: Speed = _DEFAULT["speed"],
    workers: Workers = _DEFAULT["workers"],
    device: Device = _DEFAULT["device"],
    precision: Precision = _DEFAULT["precision"],
    resume: Resume = False,
    trust_pickle: TrustPickle = False,
    progress: Progress = True,
) -> None:
    """Phase 1: train a VQ-VAE (SE → codebook → SD) on one isolated stem, on mixtures, or on all of them."""
    with _one_line_errors():
        options = TrainOptions(
            data=data,
            out=out,
            stem=stem,
            config=config,
            init=init,
            steps=steps,
            batch=batch,
            chunk=chunk,
            lr=lr,
            warmup=warmup,
            clip=clip,
            ema_decay=ema_decay,
            seed=seed,
            save_every=save_every,
            val_every=val_every,
            val_songs=val_songs,
            val_chunks=val_chunks,
            val_data=val_data,
            stats_chunks=stats_chunks,
            remix=remix,
            shift=shift,
            blend=blend,
            gain_db=gain_db,
            polarity=polarity,
            eq_db=eq_db,
            speed=speed,
            workers=workers,
            device=device,
            precision=precision,
            resume=resume,
            trust_pickle=trust_pickle,
            progress=progress,
        )
        checkpoint = train_phase1(options)
    typer.echo(f"saved {checkpoint}")


@app.command()
def phase2(
    data: Data,
    out: Out,
    vqvae: Annotated[str, typer.Option(help="the phase-1 VQ-VAE: a run folder, unmix:PATH or jukebox:PATH")],
    stem: Annotated[str, typer.Option(help="drums, bass, other or vocals")] = "other",
    init: Annotated[str | None, typer.Option(help="ME start: scratch, jukebox:PATH, unmix:PATH (default: SE)")] = (
        None
    ),
    steps: Steps = _DEFAULT["steps"],
    batch: Batch = _DEFAULT["batch"],
    chunk: Chunk = _DEFAULT["chunk"],
    lr: Lr = _DEFAULT["lr"],
    warmup: Warmup = _DEFAULT["warmup"],
    clip: Clip = _DEFAULT["clip"],
    ema_decay: EmaDecay = _DEFAULT["ema_decay"],
    seed: Seed = _DEFAULT["seed"],
    save_every: SaveEvery = _DEFAULT["save_every"],
    val_every: ValEvery = _DEFAULT["val_every"],
    val_songs: ValSongs = _DEFAULT["val_songs"],
    val_chunks: ValChunks = _DEFAULT["val_chunks"],
    val_data: ValData = _DEFAULT["val_data"],
    stats_chunks: StatsChunks = _DEFAULT["stats_chunks"],
    remix: Remix = _DEFAULT["remix"],
    shift: Shift = _DEFAULT["shift"],
    blend: Blend = _DEFAULT["blend"],
    gain_db: GainDb = _DEFAULT["gain_db"],
    polarity: Polarity = _DEFAULT["polarity"],
    eq_db: EqDb = _DEFAULT["eq_db"],
    speed: Speed = _DEFAULT["speed"],
    workers: Workers = _DEFAULT["workers"],
    device: Device = _DEFAULT["device"],
    precision: Precision = _DEFAULT["precision"],
    resume: Resume = False,
    trust_pickle: TrustPickle = False,
    progress: Progress = True,
) -> None:
    """Phase 2: train a mixture encoder ME so that ME(mixture) ≈ SE(stem); saves the separator ME → codebook → SD."""
    with _one_line_errors():
        options = TrainOptions(
            data=data,
            out=out,
            vqvae=vqvae,
            stem=stem,
            init=init,
            steps=steps,
            batch=batch,
            chunk=chunk,
            lr=lr,
            warmup=warmup,
            clip=clip,
            ema_decay=ema_decay,
            seed=seed,
            save_every=save_every,
            val_every=val_every,
            val_songs=val_songs,
            val_chunks=val_chunks,
            val_data=val_data,
            stats_chunks=stats_chunks,
            remix=remix,
            shift=shift,
            blend=blend,
            gain_db=gain_db,
            polarity=polarity,
            eq_db=eq_db,
            speed=speed,
            workers=workers,
            device=device,
            precision=precision,
            resume=resume,
            trust_pickle=trust_pickle,
            progress=progress,
        )
        checkpoint = train_phase2(options)
    typer.echo(f"saved {checkpoint}")


@app.command()
def plot(
    run: Path = typer.Argument(..., help="a run folder (with metrics.jsonl)"),
    out: Path | None = typer.Option(None, help="PNG to write (default: RUN/curves.png)"),
) -> None:
    """Draw a run's training and validation curves as a PNG."""
    from .plot import plot_run  # matplotlib loads slowly; only this command needs it

    try:
        typer.echo(f"wrote {plot_run(run, out)}")
    except OptionsError as error:
        fail(str(error))


@app.command()
def corpus(
    root: Path = typer.Argument(..., help="corpus folder (MUSDB18-HQ layout: ROOT/SPLIT/SONG/*.wav)"),
    split: str = typer.Option("train", help="the split folder to render into (train or test)"),
    songs: int = typer.Option(100, min=1, help="how many songs"),
    seconds: float = typer.Option(30.0, help="each song's length"),
    seed: int = typer.Option(1, help="the corpus seed: song i is a function of (seed, i)"),
    pool: str = typer.Option("train", help="train, or held-out: another corpus's material, for --val-data"),
    soundfont: list[Path] = typer.Option([], help="an extra General MIDI SoundFont to draw from (repeatable)"),
    prefix: str = typer.Option("Varied", help="song folder names: PREFIX - 0000, ..."),
    workers: int = typer.Option(max(1, min(4, os.cpu_count() or 1)), min=1, help="songs rendered side by side"),
) -> None:
    """Render a synthetic corpus of our own: varied styles, SoundFonts, singers and mixes (`unmix.train.corpus`)."""
    from .corpus.render import render_corpus

    with _one_line_errors():
        folders = render_corpus(
            root,
            split,
            songs,
            seconds,
            seed,
            pool,
            tuple(soundfont),
            prefix,
            workers,
            progress=lambda folder: typer.echo(f"wrote {folder}"),
        )
    typer.echo(f"{len(folders)} songs in {root / split}")


if __name__ == "__main__":  # `python -m unmix.train.cli` and `torchrun -m unmix.train.cli`
    app()
