"""Parity and calibration audio: MUSDB-layout folders, single files at other rates, the synthetic song."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from synth_corpus import make_corpus, make_song, write_song

from unmix.export import ExportError
from unmix.export.audio import calibration_chunks, load_parity_audio, synthetic_audio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("corpus"), songs=2, seconds=1.0)
    write_song(root, "Held out", make_song(np.random.default_rng(9), 1.0), 44100, "musdb", split="test")
    return root


def test_musdb_folder_gives_mixtures_with_their_stems_test_split_first(corpus):
    audio = load_parity_audio(corpus, 44100, 8, segments=3, seconds=0.5)
    assert not audio.synthetic and "3 song(s)" in audio.description
    assert sorted(audio.stems) == ["bass", "drums", "other", "vocals"]
    first = sf.read(corpus / "test" / "Held out" / "mixture.wav", dtype="float32")[0].T
    assert audio.mixtures[0].shape == (2, 22048)  # 0.5 s at 44.1 kHz, cut to whole hops
    start = int((first.shape[1] - 22050) * 0.5)
    np.testing.assert_array_equal(audio.mixtures[0], first[:, start : start + 22048])
    for index, mixture in enumerate(audio.mixtures):
        total = sum(audio.stems[stem][index] for stem in audio.stems)
        np.testing.assert_allclose(total, mixture, atol=1e-5)


def test_a_file_at_another_rate_is_resampled_and_cut_to_hops(tmp_path):
    t = np.arange(48000) / 48000
    sf.write(tmp_path / "song.flac", 0.5 * np.sin(2 * np.pi * 440 * t), 48000)
    audio = load_parity_audio(tmp_path / "song.flac", 44100, 8, segments=2, seconds=0.25)
    assert not audio.stems and [m.shape for m in audio.mixtures] == [(1, 11024), (1, 11024)]
    spectrum = np.abs(np.fft.rfft(audio.mixtures[0][0]))
    assert abs(np.argmax(spectrum) * 44100 / 11024 - 440) < 5  # still a 440 Hz tone after resampling


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(ExportError, match="no such audio file or folder"):
        load_parity_audio(tmp_path / "missing", 44100, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no audio files"):
        load_parity_audio(tmp_path / "empty", 44100, 8)
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(ExportError, match="cannot read audio"):
        load_parity_audio(tmp_path / "notes.wav", 44100, 8)
    with pytest.raises(ExportError, match="no MUSDB-layout songs"):
        calibration_chunks(tmp_path / "empty", 44100, 8)


def test_calibration_chunks_are_mono_mixture_excerpts_from_training_songs(corpus):
    chunks = calibration_chunks(corpus, 44100, 8, count=5, seconds=0.25)
    assert len(chunks) == 5 and all(c.ndim == 1 and len(c) == 11024 for c in chunks)
    training = np.concatenate(
        [sf.read(p, dtype="float32")[0].T.ravel() for p in sorted(corpus.glob("train/*/mixture.wav"))]
    )
    assert all(np.isin(c[:16], training).all() for c in chunks)
    np.testing.assert_array_equal(chunks[0], calibration_chunks(corpus, 44100, 8, count=5, seconds=0.25)[0])


def test_synthetic_song_is_deterministic_and_sums_to_its_mixture():
    first, second = (synthetic_audio(44100, 8, segments=2, seconds=0.5) for _ in range(2))
    assert first.synthetic and "not real audio" in first.description
    for a, b in zip(first.mixtures, second.mixtures, strict=False):
        np.testing.assert_array_equal(a, b)
    total = sum(first.stems[stem][1] for stem in first.stems)
    np.testing.assert_allclose(total, first.mixtures[1], atol=1e-6)
    assert first.mixtures[0].shape == (2, 22048) and np.abs(first.mixtures[0]).max() <= 0.8 + 1e-6


def test_training_export_and_bench_read_one_musdb_layout_flac_included(tmp_path):
    """One reader (`unmix.train.data`): a song stored as FLAC is found alike by training, export and bench."""
    from unmix.bench.musdb import read_song, subset_songs
    from unmix.train.data import find_songs

    song = make_song(np.random.default_rng(3), 1.0)
    for source, audio in song.items():
        path = tmp_path / "test" / "Flac song" / f"{source}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, 44100, subtype="PCM_24")
    assert [s.name for s in find_songs(tmp_path, ["mixture", "vocals"], 44100, split="test")] == ["Flac song"]
    (folder,) = subset_songs(tmp_path, "test")
    assert read_song(folder).stems["vocals"].shape == song["vocals"].shape
    audio = load_parity_audio(tmp_path, 44100, 8, segments=1, seconds=0.5)
    assert sorted(audio.stems) == ["bass", "drums", "other", "vocals"] and "1 song(s)" in audio.description
