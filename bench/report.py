"""Benchmark outputs: versioned JSON, a markdown table and PNG plots, written atomically side by side."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from unmix.runtime.atomic import write_atomically

SCHEMA_VERSION = 1
PACKAGE_RESULTS = Path(__file__).resolve().parent / "results"


def default_results_folder() -> Path:
    """`bench/results/` in a source checkout; `./unmix-bench-results` for an installed package."""
    if (PACKAGE_RESULTS.parent.parent / "pyproject.toml").is_file():
        return PACKAGE_RESULTS
    return Path.cwd() / "unmix-bench-results"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_name(kind: str, created: str, *parts: str) -> str:
    """`rtf-cpu-paper-20261127T163000Z`: sortable, one per run."""
    stamp = created.replace("-", "").replace(":", "").replace("+0000", "Z")
    return "-".join([kind, *[p for p in parts if p], stamp])


def json_safe(value):
    """JSON without NaN/Infinity (not valid JSON): non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_outputs(report: dict, markdown: str, figure, json_path: Path) -> dict[str, Path]:
    """`json_path`, and beside it the same name with .md and .png; returns the three paths."""
    paths = {"json": json_path, "markdown": json_path.with_suffix(".md"), "plot": json_path.with_suffix(".png")}
    write_atomically(paths["json"], json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    write_atomically(paths["markdown"], markdown)
    if figure is None:
        del paths["plot"]
    else:
        save_figure(figure, paths["plot"])
    return paths


def save_figure(figure, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    write_atomically(path, buffer.getvalue())


def fmt(value, digits: int = 3, suffix: str = "") -> str:
    """A number for a table: `—` for missing, 3 significant digits by default."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if not math.isfinite(value):
        return "∞" if value > 0 else "−∞" if value < 0 else "nan"
    return f"{value:.{digits}g}{suffix}" if abs(value) < 10**digits else f"{value:.0f}{suffix}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | None = None) -> list[str]:
    """A markdown table's lines: the header, its rule (`align`: one "---" or "---:" per column), a line per row."""
    rule = align or ["---"] * len(header)
    return [_cells(header), "|" + "|".join(rule) + "|", *(_cells(row) for row in rows)]


def fidelity_table(rows: list[dict], columns: dict[str, str]) -> list[str]:
    """The table of how close each row's output came to the reference: `columns` names the title and the row key
    of the first column, of the SNR and of the SDR change (in that order); the code agreement and the largest
    absolute difference sit between them."""
    (name, name_key), (snr, snr_key), (delta, delta_key) = columns.items()
    lines = []
    for row in rows:
        agreement = None if row["code_agreement"] is None else f"{100 * row['code_agreement']:.3f} %"
        lines.append([row[name_key], row["stem"], fmt(agreement), fmt(row[snr_key]), fmt(row["max_abs"])])
        lines[-1].append(fmt(row[delta_key]))
    return table([name, "stem", "code agreement", snr, "max abs diff", delta], lines)


def _cells(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def machine_lines(machine: dict) -> list[str]:
    """The machine in a few markdown lines."""
    libraries = ", ".join(f"{name} {version}" for name, version in machine["libraries"].items())
    gpus = "; ".join(f"{g['name']} ({g['memory_mib']} MiB, driver {g['driver']})" for g in machine["gpus"]) or "none"
    cuda = machine.get("torch_cuda") or {}
    lines = [
        f"- CPU: {machine['cpu']}, {machine['cores_physical']} physical / {machine['cores_logical']} logical cores "
        f"({machine['cores_usable']} usable), {machine['threads']} threads used, {machine['memory_gib']} GiB RAM; "
        f"load average {', '.join(f'{x:.2f}' for x in machine['load_average'] or [])} at the start, "
        f"{', '.join(f'{x:.2f}' for x in machine.get('load_average_at_end') or [])} at the end",
        f"- GPU: {gpus}",
        f"- Libraries: {libraries}; onnxruntime providers: {', '.join(machine['onnxruntime_providers'])}",
        f"- Source: {machine['revision'] or 'not a git checkout'}; host {machine['hostname']}, {machine['os']}",
    ]
    if cuda.get("cuda_available"):
        lines.append(
            f"- CUDA {cuda['torch_cuda']}, cuDNN {cuda['cudnn']}; TF32: matmul {cuda['tf32_matmul']}, "
            f"cuDNN conv {cuda['tf32_cudnn']} (float32 matmul precision '{cuda['float32_matmul_precision']}')"
        )
    return lines
