"""`unmix-train plot`: PNG curves of a run's metrics (training losses, validation SDR, codebook use)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np

from unmix.runtime.atomic import replace_atomically

from .runs import read_metrics

LOSS_KEYS = ("loss", "recons", "multispec", "commit", "l2", "topk")
CODEBOOK_KEYS = ("used_curr", "usage")


def _smooth(values: list[float]) -> np.ndarray:
    """Moving average over about 1% of the points, so trends show through per-step noise."""
    window = max(1, len(values) // 100)
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _curves(axis, records: list[dict], keys: list[str], smooth: bool) -> None:
    drawn = 0
    for key in keys:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if not points:
            continue
        steps, raw = zip(*points, strict=False)
        values = _smooth(list(raw)) if smooth else np.asarray(raw)
        axis.plot(steps[len(steps) - len(values) :], values, label=key, marker="" if smooth else "o")
        drawn += 1
    axis.grid(alpha=0.3)
    if drawn:
        axis.legend(loc="best", fontsize="small")
    else:  # e.g. a run trained with --val-every 0
        axis.text(0.5, 0.5, "nothing logged", transform=axis.transAxes, ha="center", va="center", color="gray")


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's curves into `out` (default RUN/curves.png); returns the PNG's path."""
    run = Path(run)
    out = Path(out) if out else run / "curves.png"
    records = read_metrics(run)
    training = [r for r in records if r.get("kind") == "train"]
    validation = [r for r in records if r.get("kind") == "val"]
    loss_keys = [key for key in LOSS_KEYS if any(key in r for r in training)]
    val_keys = sorted({key for r in validation for key in r if key.startswith("val_")})
    codebook_keys = [key for key in CODEBOOK_KEYS if any(key in r for r in training)]
    panels = 2 + bool(codebook_keys)
    figure, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels), sharex=True)
    _curves(axes[0], training, loss_keys, smooth=True)
    axes[0].set_yscale("log")
    axes[0].set_title(f"{run.name}: training losses")
    _curves(axes[1], validation, val_keys, smooth=False)
    axes[1].set_ylabel("SDR (dB)")
    axes[1].set_title("validation on held-out songs")
    if codebook_keys:
        _curves(axes[2], training, codebook_keys, smooth=True)
        axes[2].set_title("codebook: codes used by the batch, codes alive")
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    replace_atomically(out, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)
    return out
