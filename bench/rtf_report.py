"""The RTF report: markdown tables and the RTF-per-backend plot."""

from __future__ import annotations

from .report import fidelity_table, fmt, machine_lines, table

WORKLOAD_NAMES = {
    ("chunk", 1): "chunk, 1 stem",
    ("chunk", 4): "chunk, 4 stems",
    ("track", 1): "track, 1 stem",
    ("track", 4): "track, 4 stems",
}


def workload_name(scope: str, stems: int) -> str:
    return WORKLOAD_NAMES.get((scope, stems), f"{scope}, {stems} stems")


def rtf_markdown(report: dict) -> str:
    settings, model, audio = report["settings"], report["model"], report["audio"]
    lines = [
        f"# unmix-bench: real-time factor on {settings['device']} ({model['config_name']} config)",
        "",
        f"- Date: {report['created']}",
        f"- Command: `{report['command']}`",
        f"- Model: {model['description']}",
        *machine_lines(report["machine"]),
        f"- Audio: chunk = {audio['chunk_samples']} mono samples ({audio['chunk_seconds']:.2f} s, the paper's); "
        f"track = {audio['track_seconds']:.1f} s stereo PCM-16 wav, decoded → separated → written; "
        f"{audio['description']}",
        f"- Runs: median of {settings['repeats']} (chunk) / {settings['track_repeats']} (track) timed runs after "
        f"{settings['warmup']} warm-up run(s); each row × workload in a fresh process; one-stem rows time "
        f"'{settings['per_stem']}' (its graph alone); four-stem runtime rows include the refinement "
        "`unmix separate` applies",
        "",
        "## Real-time factor",
        "",
        "RTF = median wall-clock seconds / seconds of audio (lower is faster). "
        "× ref = RTF / the reference's RTF on the same workload; × paper = RTF / (0.082 × stems). "
        "CPU RTF = median CPU seconds of the row's process (all threads) / seconds of audio, and CPU × ref its "
        "ratio to the reference's: steadier than wall time when other work shares the machine.",
        "",
    ]
    not_measured: dict[tuple[str, str, str], list[str]] = {}  # (row, status, message) → workloads
    measured = []
    for row in report["measurements"]:
        if row["status"] != "ok":
            key = (row["label"], row["status"], row["message"])
            not_measured.setdefault(key, []).append(workload_name(row["scope"], row["stems"]))
            continue
        gpu = row.get("gpu_peak_mib") or row.get("torch_peak_reserved_mib")
        measured.append(
            [row["label"], workload_name(row["scope"], row["stems"]), fmt(row["median_s"]), fmt(row["rtf"])]
            + [fmt(row["ratio_to_reference"]), fmt(row["ratio_to_paper"]), fmt(row.get("cpu_rtf"))]
            + [fmt(row.get("cpu_ratio_to_reference")), fmt(row["peak_rss_mib"], 4), fmt(gpu, 4)]
        )
    header = ["backend", "workload", "median s", "RTF", "× ref", "× paper", "CPU RTF", "CPU × ref"]
    lines += table([*header, "peak RSS MiB", "GPU MiB"], measured)
    if not_measured:
        lines += ["", "Not measured:", ""]
        for (label, status, message), workloads in not_measured.items():
            where = "all workloads" if len(workloads) == len(report["settings"]["workloads"]) else "; ".join(workloads)
            lines.append(f"- {label} ({where}): {status} — {message}")
    lines += ["", "## Fidelity on the same audio", ""]
    fidelity = report["fidelity"]
    lines.append(f"Against: {fidelity['reference']}. {fidelity['note']}")
    if fidelity["rows"]:
        columns = {"backend": "label", "SNR vs reference dB": "snr_db", "SDR Δ dB": "sdr_delta_db"}
        lines += ["", *fidelity_table(fidelity["rows"], columns)]
    lines += ["", *[f"- {line}" for line in fidelity["skipped"]]] if fidelity["skipped"] else []
    lines += ["", "## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def rtf_figure(report: dict):
    """One panel per workload: a horizontal bar per backend on a shared log RTF axis, the paper's figure dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    measurements = report["measurements"]
    workloads = list(dict.fromkeys((row["scope"], row["stems"]) for row in measurements))
    labels = list(dict.fromkeys(row["label"] for row in measurements))
    values = [row["rtf"] for row in measurements if row["rtf"]] + [report["paper_rtf_per_stem"]]
    low, high = min(values) / 2, max(values) * 4 * 2
    columns = 2 if len(workloads) > 1 else 1
    grid_rows = -(-len(workloads) // columns)
    figure, axes = plt.subplots(
        grid_rows, columns, figsize=(7 * columns, 0.42 * len(labels) * grid_rows + 1.8 * grid_rows), squeeze=False
    )
    for axis, (scope, stems) in zip(axes.flat, workloads, strict=False):
        rtf = {
            row["label"]: row["rtf"]
            for row in measurements
            if (row["scope"], row["stems"]) == (scope, stems) and row["rtf"]
        }
        positions = list(range(len(labels)))
        axis.set_xscale("log")
        axis.set_xlim(low, high)
        axis.barh(
            positions,
            [rtf.get(label, low) - low for label in labels],
            left=low,
            color=["tab:gray" if "reference" in label else "tab:blue" for label in labels],
        )
        for position, label in zip(positions, labels, strict=False):
            text = f" {fmt(rtf[label])}" if label in rtf else " not measured"
            axis.text(rtf.get(label, low), position, text, va="center", fontsize=8)
        axis.axvline(report["paper_rtf_per_stem"] * stems, color="tab:red", linestyle="--")
        axis.set_yticks(positions, labels, fontsize=8)
        axis.invert_yaxis()
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_title(f"{workload_name(scope, stems)} — dashed: the paper's 0.082 × {stems}", fontsize=10)
        axis.set_xlabel("RTF (log scale; lower is faster)", fontsize=9)
    for axis in list(axes.flat)[len(workloads) :]:
        axis.set_visible(False)
    settings = report["settings"]
    figure.suptitle(
        f"unmix-bench RTF on {settings['device']}, {report['model']['config_name']} config — "
        f"{report['machine']['cpu']}, "
        f"{settings['threads']} threads — {report['created'][:10]}",
        fontsize=10,
    )
    figure.tight_layout()
    return figure
