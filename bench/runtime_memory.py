"""Peak memory of `unmix separate` against track length: the runtime's memory must not grow with it.
Run as `python -m unmix.bench.runtime_memory --bundle BUNDLE --minutes 1 60 [--stems vocals] [--out FILE.md]`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .machine import cpu_model, library_versions, usable_cores
from .report import table as report_table

BLOCK_SECONDS = 10


def write_track(path: Path, seconds: float, sample_rate: int) -> None:
    """A deterministic stereo 16-bit track: decaying tone bursts over noise, written block by block so that this
    probe's own memory stays small."""
    rng = np.random.default_rng(0)
    block = BLOCK_SECONDS * sample_rate
    t = np.arange(block) / sample_rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * (t % 0.5))
    right = 0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-3 * ((t + 0.25) % 0.5))
    pattern = np.stack([left, right], axis=1).astype(np.float32)
    with sf.SoundFile(str(path), "w", sample_rate, 2, "PCM_16") as handle:
        remaining = round(seconds * sample_rate)
        while remaining:
            frames = min(block, remaining)
            handle.write(pattern[:frames] + 0.05 * rng.standard_normal((frames, 2)).astype(np.float32))
            remaining -= frames


def peak_rss(command: list[str]) -> tuple[float, float]:
    """Run `command`; its peak resident set size (MiB) and wall time (s). Raises if it fails.

    The command runs in a fresh process, whose peak RSS the kernel reports (wait4's ru_maxrss).
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        assert process.stderr is not None  # stderr=PIPE above
        raise RuntimeError(f"{shlex.join(command)} failed: {process.stderr.read().decode().strip()}")
    return usage.ru_maxrss / 1024, wall  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder to separate with")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 60], help="track lengths")
    parser.add_argument("--stems", help="comma-separated stems (default: all)")
    parser.add_argument("--chunk", type=int, help="--chunk for unmix separate (default: its own)")
    parser.add_argument("--threads", type=int, help="--threads for unmix separate")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--workdir", type=Path, help="where the tracks go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="append the markdown table to this file")
    args = parser.parse_args(argv)

    # a bare `import unmix.runtime` shows the fixed cost the track rows grow from
    rows = [("import unmix.runtime only", 0.0, *peak_rss([sys.executable, "-c", "import unmix.runtime"]))]
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        for minutes in args.minutes:
            track = Path(folder) / f"track-{minutes:g}min.wav"
            write_track(track, minutes * 60, args.sample_rate)
            command = [
                sys.executable,
                "-m",
                "unmix.runtime.cli",
                "separate",
                str(track),
                "-o",
                str(Path(folder) / "out"),
                "--bundle",
                str(args.bundle),
                "--quiet",
                "--overwrite",
            ]
            for option in ("stems", "chunk", "threads"):
                if getattr(args, option) is not None:
                    command += [f"--{option}", str(getattr(args, option))]
            rss, wall = peak_rss(command)
            rows.append((f"{minutes:g} min stereo 16-bit WAV", minutes * 60, rss, wall))
            print(f"{minutes:g} min: peak RSS {rss:.0f} MiB, {wall:.0f} s", file=sys.stderr)
            track.unlink()
    shown = [c if c.startswith("-") or "/" not in c else Path(c).name for c in command[1:]]
    table = "\n".join(
        [
            f"### {datetime.date.today()} · {cpu_model()} · {usable_cores()} cores · {platform.system()}",
            "",
            f"Command per track: `python {shlex.join(shown)}` (bundle `{args.bundle}`); "
            f"onnxruntime {library_versions().get('onnxruntime', '?')}.",
            "",
            *report_table(
                ["input", "audio (s)", "peak RSS (MiB)", "wall (s)", "RTF"],
                (
                    [name, f"{seconds:.0f}" if seconds else "–", f"{rss:.0f}", f"{wall:.1f}"]
                    + [f"{wall / seconds:.3f}" if seconds else "–"]
                    for name, seconds, rss, wall in rows
                ),
                align=["---", "---:", "---:", "---:", "---:"],
            ),
            "",
        ]
    )
    print(table)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
