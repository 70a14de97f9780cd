"""train/recipes/compact_corpus.py: a packed corpus unpacks to a MUSDB18-HQ tree whose mixture is its stems' sum."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from synth_corpus import STEMS, make_corpus

from unmix.train.data import find_songs

SCRIPT = Path(__file__).resolve().parents[1] / "train" / "recipes" / "compact_corpus.py"


def _run(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], check=True, capture_output=True, text=True
    ).stdout


def test_pack_then_unpack_gives_a_consistent_corpus(tmp_path):
    root = make_corpus(tmp_path / "corpus", songs=3, seconds=2.0)
    wav_bytes = sum(path.stat().st_size for path in (root / "train" / "Song00").glob("*.wav"))
    assert "packed 2 songs" in _run("pack", root, tmp_path / "packed", "--songs", "2")
    packed = tmp_path / "packed" / "train" / "Song00"
    assert sorted(path.name for path in packed.iterdir()) == sorted(f"{stem}.ogg" for stem in STEMS)
    assert sum(path.stat().st_size for path in packed.iterdir()) < wav_bytes / 10

    _run("unpack", tmp_path / "packed", tmp_path / "unpacked", "--workers", "2")
    songs = find_songs(tmp_path / "unpacked", ("mixture", *STEMS), 44100)
    assert [song.name for song in songs] == ["Song00", "Song01"]
    folder = tmp_path / "unpacked" / "train" / "Song01"
    stems = {stem: sf.read(folder / f"{stem}.wav", dtype="float32")[0] for stem in STEMS}
    np.testing.assert_allclose(sf.read(folder / "mixture.wav", dtype="float32")[0], sum(stems.values()), atol=1e-6)
    original, _ = sf.read(root / "train" / "Song01" / "bass.wav", dtype="float32")
    decoded = stems["bass"][: len(original)]
    mono = original.mean(axis=1)[: len(decoded)]
    assert 10 * np.log10(np.sum(mono**2) / np.sum((mono - decoded) ** 2)) > 10  # lossy, but the same bass line


def test_pack_stops_before_the_size_limit(tmp_path):
    root = make_corpus(tmp_path / "corpus", songs=3, seconds=2.0)
    assert "packed 0 songs" in _run("pack", root, tmp_path / "packed", "--max-mb", "0.001")
    assert not any((tmp_path / "packed" / "train").iterdir())
