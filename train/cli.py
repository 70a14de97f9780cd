"""`unmix-train`: inspect checkpoints and run the paper's two training phases."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .checkpoint import CheckpointError, read_checkpoint

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """Inspect checkpoints and train the paper's two phases."""


def fail(message: str) -> None:
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
    report = {
        "path": str(path),
        "format": checkpoint.format,
        "parts": checkpoint.parts,
        "level0_keys": len(checkpoint.state),
        "total_keys": checkpoint.total_keys,
        "parameters": checkpoint.parameter_counts(),
        "step": checkpoint.step,
        "config": checkpoint.config.to_dict(),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{path}: {checkpoint.format}, step {checkpoint.step if checkpoint.step is not None else '?'}")
    typer.echo(f"  level-0 keys: {len(checkpoint.state)} (of {checkpoint.total_keys} in the file)")
    for part, count in report["parameters"].items():
        typer.echo(f"  {part:<9} {count:>10,} numbers")
