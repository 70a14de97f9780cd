"""Carry a training corpus to a machine it cannot be rendered on, in a few MB per song.

  python train/recipes/compact_corpus.py pack ROOT PACKED [--split train] [--songs N] [--max-mb MB]
  python train/recipes/compact_corpus.py unpack PACKED ROOT [--workers N]

`pack` keeps the four stems of each song of a MUSDB18-HQ-layout split as mono Vorbis at its smallest
setting (about 5 kB/s, 16 dB SNR): the mixture is left out, because the synthetic corpus's mixture is
the exact sum of its stems. `unpack` writes the MUSDB18-HQ layout back as WAV, with mixture = sum of
the decoded stems, so every training pair stays consistent. The audio is lossy and mono (the sampler's
stereo blend becomes a no-op): a run trained on it says so in its provenance.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from unmix.runtime.manifest import STEMS


def pack_song(song: Path, out: Path) -> int:
    """Write `song`'s stems as mono Vorbis under `out`; returns the bytes written."""
    out.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        audio, rate = sf.read(song / f"{stem}.wav", dtype="float32", always_2d=True)
        sf.write(out / f"{stem}.ogg", audio.mean(axis=1), rate, format="OGG", subtype="VORBIS", compression_level=1.0)
    return sum((out / f"{stem}.ogg").stat().st_size for stem in STEMS)


def unpack_song(packed: Path, out: Path) -> None:
    """Decode a packed song into WAV stems and their sum as the mixture."""
    out.mkdir(parents=True, exist_ok=True)
    decoded = {stem: sf.read(packed / f"{stem}.ogg", dtype="float32") for stem in STEMS}
    length = min(len(audio) for audio, _ in decoded.values())  # Vorbis may pad the last block
    for stem, (audio, rate) in decoded.items():
        sf.write(out / f"{stem}.wav", audio[:length], rate, subtype="FLOAT")
    mixture = np.sum([audio[:length] for audio, _ in decoded.values()], axis=0)
    sf.write(out / "mixture.wav", mixture, rate, subtype="FLOAT")


def pack(root: Path, packed: Path, split: str, songs: int | None, max_mb: float | None) -> None:
    """Pack the first `songs` songs of `split` (in name order), stopping before `max_mb` megabytes."""
    used = 0
    for song in sorted(p for p in (root / split).iterdir() if p.is_dir())[:songs]:
        target = packed / split / song.name
        size = pack_song(song, target)
        if max_mb is not None and used + size > max_mb * 1e6:
            for file in target.iterdir():
                file.unlink()
            target.rmdir()
            break
        used += size
    print(f"packed {len(list((packed / split).iterdir()))} songs of {split} in {used / 1e6:.1f} MB")


def unpack(packed: Path, root: Path, workers: int) -> None:
    """Unpack every split and song under `packed` into `root`."""
    songs = sorted(p for p in packed.glob("*/*") if p.is_dir())
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(unpack_song, songs, [root / song.relative_to(packed) for song in songs]))
    print(f"unpacked {len(songs)} songs into {root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="stems of a MUSDB18-HQ-layout split → mono Vorbis")
    packing.add_argument("root", type=Path)
    packing.add_argument("packed", type=Path)
    packing.add_argument("--split", default="train")
    packing.add_argument("--songs", type=int, default=None, help="at most this many songs (default: all)")
    packing.add_argument("--max-mb", type=float, default=None, help="stop before the packed songs exceed this")
    unpacking = commands.add_parser("unpack", help="packed stems → MUSDB18-HQ layout with mixture = sum of stems")
    unpacking.add_argument("packed", type=Path)
    unpacking.add_argument("root", type=Path)
    unpacking.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.root, args.packed, args.split, args.songs, args.max_mb)
    else:
        unpack(args.packed, args.root, args.workers)


if __name__ == "__main__":
    main()
