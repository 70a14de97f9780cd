"""Streaming against offline on one track: latency, compute and peak memory of `unmix stream` beside `unmix separate`.

Each row runs the command in a fresh process on the same stereo track, as a user would: `unmix separate FILE` (the
offline pass), and `unmix stream` fed the track's raw samples from a file in blocks (as fast as it computes, so
its time is its compute). The offline pass runs twice, on the stateful models (`--stateful`) and in stages that
recompute their context (`--stages`). Reported per row: wall time, RTF, peak RSS (the kernel's ru_maxrss), and for
streams the latency the stream promises and the largest lag it showed (audio time: input fed minus stems returned),
with and without refinement. `compute ratio` is a stream's wall time over the faster offline pass's, same refinement.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from .report import table

_STREAMED = re.compile(r"at most ([0-9.]+) s \(here ([0-9.]+) s\)")


@dataclass
class StreamRow:
    """One command's measurement."""

    name: str
    command: str
    refine: bool
    wall_s: float
    rtf: float
    peak_rss_mib: float
    latency_promised_s: float | None = None
    lag_s: float | None = None
    compute_ratio: float | None = None


def _run(command: list[str], stdin: Path | None = None) -> tuple[str, float]:
    """Run `command` (stdin from a file); its stdout and wall time (s). Raises if it fails."""
    start = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        process = subprocess.run(command, stdin=source, capture_output=True)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        problem = (process.stderr.decode().strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{shlex.join(command)} failed: {problem}")
    return process.stdout.decode(), wall


def measure(
    track: Path, *, bundle: str = "default", block: float = 0.5, extra: list[str] | None = None
) -> list[StreamRow]:
    """Time `unmix separate` (stateful, in stages) and `unmix stream` on `track`, with and without refinement; one
    process each. `extra` goes to every command (it must leave the backend on openvino, which runs both ways).

    Each command runs under a small probe process that reads that command's own peak RSS (wait4).
    """
    audio, rate = sf.read(str(track), dtype="float32", always_2d=True)
    seconds = len(audio) / rate
    unmix = [str(Path(sys.executable).parent / "unmix")]  # the console script installed beside this Python
    extra = extra or []
    rows: list[StreamRow] = []
    with tempfile.TemporaryDirectory(prefix="unmix-bench-stream-") as scratch:
        raw = Path(scratch) / "track.f32"
        raw.write_bytes(audio.astype("<f4").tobytes())
        for refine in (False, True):
            flag = "--refine" if refine else "--no-refine"
            offline = []
            for graphs in ("--stateful", "--stages"):
                command = [
                    *unmix,
                    "separate",
                    str(track),
                    "-o",
                    f"{scratch}/offline",
                    "-q",
                    "--overwrite",
                    "--bundle",
                    bundle,
                    flag,
                    graphs,
                    *extra,
                ]
                _, wall, peak = _run_isolated(command)
                offline.append(wall)
                name = f"unmix separate {flag} {graphs}"
                rows.append(StreamRow(name, shlex.join(command), refine, wall, wall / seconds, peak))
            command = [
                *unmix,
                "stream",
                "-",
                "-o",
                f"{scratch}/stream",
                "-q",
                "--rate",
                str(rate),
                "--channels",
                str(audio.shape[1]),
                "--block",
                str(block),
                "--bundle",
                bundle,
                flag,
                *extra,
            ]
            out, wall, peak = _run_isolated(command, stdin=raw)
            found = _STREAMED.search(out)
            if not found:
                raise RuntimeError(f"unexpected output from unmix stream: {out.strip()!r}")
            rows.append(
                StreamRow(
                    f"unmix stream {flag} ({block:g} s blocks)",
                    shlex.join(command),
                    refine,
                    wall,
                    wall / seconds,
                    peak,
                    latency_promised_s=float(found.group(1)),
                    lag_s=float(found.group(2)),
                    compute_ratio=wall / min(offline),
                )
            )
    return rows


def _run_isolated(command: list[str], stdin: Path | None = None) -> tuple[str, float, float]:
    """`command` in a fresh process, measured alone: its stdout, wall time and its own peak RSS (MiB)."""
    probe = [sys.executable, "-c", _PROBE, *command]
    out, wall = _run(probe, stdin)
    text, _, peak = out.rpartition("\n__peak_rss_kib__ ")
    return text, wall, float(peak) / 1024


# A parent that runs the command and reports that one child's peak RSS (wait4), whatever ran before it.
_PROBE = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
code = os.waitstatus_to_exitcode(status)
sys.stdout.flush()
print("\\n__peak_rss_kib__", usage.ru_maxrss, flush=True)
sys.exit(code)
"""


def markdown(rows: list[StreamRow], *, track: str, seconds: float, machine: str, command: str, date: str) -> str:
    lines = [
        f"# Streaming against offline: {track} ({seconds:.0f} s stereo)",
        "",
        f"{machine}; {date}; `{command}`",
        "",
    ]
    lines += table(
        ["command", "RTF", "peak RSS", "promised latency", "largest lag", "compute ÷ offline"],
        (
            [
                row.name,
                f"{row.rtf:.3f}",
                f"{row.peak_rss_mib:.0f} MiB",
                f"{row.latency_promised_s:.2f} s" if row.latency_promised_s is not None else "–",
                f"{row.lag_s:.2f} s" if row.lag_s is not None else "–",
                f"{row.compute_ratio:.2f}×" if row.compute_ratio is not None else "–",
            ]
            for row in rows
        ),
    )
    return "\n".join(lines) + "\n"


def to_json(rows: list[StreamRow]) -> list[dict]:
    return [asdict(row) for row in rows]


def synthetic_track(path: Path, seconds: float, sample_rate: int = 44100) -> Path:
    """A deterministic stereo test track (`runtime_memory.write_track`), for runs without a corpus."""
    from .runtime_memory import write_track

    write_track(path, seconds, sample_rate)
    return path
