"""The SDR report: markdown tables and the SDR-per-stem plot with the baselines."""

from __future__ import annotations

from unmix.runtime.manifest import STEMS

from .report import fidelity_table, fmt, machine_lines, table

KIND_COLOURS = {
    "model": "tab:blue",
    "reference": "tab:cyan",
    "ceiling": "tab:green",
    "baseline": "tab:gray",
    "oracle": "tab:orange",
}


def stem_columns(methods: list[dict]) -> list[str]:
    """Every stem any method scored (a bundle may hold fewer than the baselines), MUSDB's four first."""
    seen = dict.fromkeys(stem for row in methods for stem in row["mean"])
    return [stem for stem in STEMS if stem in seen] + [stem for stem in seen if stem not in STEMS]


def sdr_table(methods: list[dict], stems: list[str]) -> list[str]:
    """Each method's mean SDR per stem and (bold) over stems."""
    return table(
        ["method", *stems, "total"],
        (
            [row["method"], *(fmt(row["mean"].get(s), 3) for s in stems), f"**{fmt(row['total'], 3)}**"]
            for row in methods
        ),
    )


def refinement_lines(model: dict) -> list[str]:
    """What the "+ refinement" rows weighed the stems' powers by (reports from before band weights say nothing)."""
    if "refinement" not in model:
        return []
    if "band_weights" not in model["refinement"]:
        return ["- Refinement: the estimates' plain powers (the bundle has no band weights)"]
    fitted = model["refinement"].get("fitted", {})
    origin = f"{fitted['songs']} of {fitted['data']}" if "songs" in fitted else fitted.get("data", "unstated songs")
    spread = model["refinement"].get("spread_bins", {})
    spread_text = "".join(f", {stem}'s power spread over {bins} bins" for stem, bins in spread.items() if bins > 1)
    return [f"- Refinement: the bundle's band weights, fitted on {origin}{spread_text}"]


def sdr_markdown(report: dict) -> str:
    data, methods = report["data"], report["methods"]
    stems = stem_columns(methods)
    provenance = report["model"]["provenance"]
    weights = provenance.get("weights") or provenance.get("note") or "see the bundle's manifest"
    lines = [
        f"# unmix-bench: separation quality on {data['root']} ({data['subset']})",
        "",
        f"- Date: {report['created']}",
        f"- Command: `{report['command']}`",
        f"- Data: {len(data['songs'])} songs, {data['seconds']:.1f} s in all",
        f"- Model: bundle {report['model']['bundle']} — {weights}"
        if report["model"]["bundle"]
        else "- Model: none (baselines only)",
        *refinement_lines(report["model"]),
        f"- PyTorch model: {report['model'].get('pytorch_weights') or 'not given (--separator)'}",
        f"- Metric: {report['metric']}",
        *machine_lines(report["machine"]),
        "",
        "## SDR (dB, higher is better)",
        "",
    ]
    lines += sdr_table(methods, stems)
    bss = [row for row in methods if "bsseval_median" in row]
    if bss:
        lines += ["", "BSSEval v4 SDR (museval; median over 1 s frames, then over songs):", ""]
        lines += table(
            ["method", *stems], ([row["method"], *(fmt(row["bsseval_median"].get(s), 3) for s in stems)] for row in bss)
        )
    fidelity = report["fidelity"]
    lines += ["", "## Fidelity", "", f"Against: {fidelity['reference']}. {fidelity['note']}."]
    if fidelity["rows"]:
        columns = {"method": "method", "SNR dB": "snr_db", "song SDR Δ dB": "song_sdr_delta_db"}
        lines += ["", *fidelity_table(fidelity["rows"], columns)]
    if report["skipped"]:
        lines += ["", "## Not run", "", *[f"- {line}" for line in report["skipped"]]]
    lines.append("")
    return "\n".join(lines)


def sdr_figure(report: dict):
    """Grouped bars: SDR per stem (and total) for every method, baselines included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = report["methods"]
    stems = [*stem_columns(methods), "total"]
    figure, axis = plt.subplots(figsize=(max(7, 1.6 * len(stems) + 0.4 * len(methods)), 4.5))
    width = 0.8 / max(1, len(methods))
    shades: dict[str, int] = {}
    for index, row in enumerate(methods):
        values = [row["mean"].get(stem, np.nan) for stem in stems[:-1]] + [row["total"]]
        shade = shades[row["kind"]] = shades.get(row["kind"], -1) + 1
        axis.bar(
            np.arange(len(stems)) + (index - (len(methods) - 1) / 2) * width,
            values,
            width,
            label=row["method"],
            color=KIND_COLOURS.get(row["kind"], "tab:purple"),
            alpha=max(0.3, 1.0 - 0.2 * shade),  # the third and later rows of a kind stay visible
            edgecolor="black",
            linewidth=0.4,
        )
    axis.axhline(0, color="black", linewidth=0.6)
    axis.set_xticks(range(len(stems)), stems)
    axis.set_ylabel("SDR (dB, paper eq. 2, whole songs)")
    data = report["data"]
    axis.set_title(
        f"unmix-bench SDR — {len(data['songs'])} songs of {data['root']} ({data['subset']}) — {report['created'][:10]}",
        fontsize=10,
    )
    axis.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    figure.tight_layout()
    return figure


def comparison_markdown(reports: dict[str, dict], title: str) -> str:
    """One SDR table across several `unmix-bench sdr` reports: each report's model rows under its label,
    then the baselines and oracle of the first report that scored them (the same songs and stems assumed)."""
    rows = [
        {**row, "method": f"{label}: {row['method']}"}
        for label, report in reports.items()
        for row in report["methods"]
        if row["kind"] in ("model", "reference", "ceiling")
    ]
    with_baselines = [r for r in reports.values() if any(row["kind"] == "baseline" for row in r["methods"])]
    if with_baselines:
        rows += [row for row in with_baselines[0]["methods"] if row["kind"] in ("baseline", "oracle")]
    stems = stem_columns(rows)
    lines = [f"# {title}", "", *sdr_table(rows, stems)]
    lines += ["", "Reports (the paper's SDR, eq. 2; mean over songs; total = mean over stems):", ""]
    for label, report in reports.items():
        data = report["data"]
        songs = f"{len(data['songs'])} songs, {data['seconds']:.1f} s"
        lines.append(f"- {label}: `{report['command']}` ({report['created']}; {songs})")
    return "\n".join(lines) + "\n"
