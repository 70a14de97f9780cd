"""Training data: both corpus layouts, seeking reads, resampling, the shared stereo blend, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from synth_corpus import make_corpus, write_song

from unmix.runtime import manifest
from unmix.train import data
from unmix.train.data import SOURCES, CorpusError, find_songs, split_songs
from unmix.train.sampling import ChunkSampler


def test_the_stems_are_the_bundles_stems_in_the_papers_order():
    assert data.STEMS is manifest.STEMS  # one list for training, export, the runtime and the benchmarks
    assert SOURCES == ("mixture", *manifest.STEMS) and data.UNMIX_IDS == {
        "mixture": 0,
        "drums": 1,
        "bass": 2,
        "other": 3,
        "vocals": 4,
    }


def test_musdb_and_unmix_layouts_hold_the_same_songs(tmp_path):
    musdb = find_songs(make_corpus(tmp_path / "musdb", songs=3, seconds=1.0, layout="musdb"), SOURCES, 44100)
    unmix = find_songs(make_corpus(tmp_path / "unmix", songs=3, seconds=1.0, layout="unmix"), SOURCES, 44100)
    assert [s.name for s in musdb] == [s.name for s in unmix] == ["Song00", "Song01", "Song02"]
    assert unmix[0].files["other"].path == tmp_path / "unmix" / "train_3" / "Song00.wav"
    a = ChunkSampler(musdb, 4096, ("mixture", "bass"), seed=1)
    b = ChunkSampler(unmix, 4096, ("mixture", "bass"), seed=1)
    for position in range(6):
        np.testing.assert_array_equal(a[position], b[position])


def test_unmix_layout_maps_the_paper_s_0_token_in_file_names(tmp_path):
    root = make_corpus(tmp_path, songs=2, seconds=0.5, layout="unmix")
    for index in range(5):
        for path in (root / f"train_{index}").iterdir():
            path.rename(path.with_name(f"{path.stem}_{index}.wav"))
    songs = find_songs(root, SOURCES, 44100)
    assert [s.name for s in songs] == ["Song00_0", "Song01_0"]
    assert songs[1].files["vocals"].path == root / "train_4" / "Song01_4.wav"


def _only_other_sounds(root, songs=3, seconds=1.0, rate=44100):
    """Songs whose only sounding stem is `other`, with different left and right channels."""
    rng = np.random.default_rng(0)
    frames = int(seconds * rate)
    for index in range(songs):
        other = rng.standard_normal((frames, 2)).astype(np.float32) * [0.3, 0.05]
        silent = np.zeros_like(other)
        sources = {"drums": silent, "bass": silent, "vocals": silent, "other": other, "mixture": other.copy()}
        write_song(root, f"S{index}", sources, rate, "musdb")
    return root


@pytest.mark.parametrize("remix", [0.0, 1.0])
def test_mixture_and_stem_share_one_stereo_blend(tmp_path, remix):
    songs = find_songs(_only_other_sounds(tmp_path), SOURCES, 44100)
    blended = ChunkSampler(songs, 4096, ("mixture", "other"), seed=0, remix=remix)
    halves = ChunkSampler(songs, 4096, ("mixture", "other"), seed=0, remix=remix, blend=False)
    for position in range(12):
        mixture, stem = blended[position]
        np.testing.assert_allclose(mixture, stem, atol=1e-6)  # mixture == other, so equal blends agree
        # Same chunk with an L/R mean instead: the random blend really changed the mono signal.
        assert not np.allclose(mixture, halves[position][0], atol=1e-3)


def test_examples_depend_only_on_seed_and_position(tmp_path):
    songs = find_songs(make_corpus(tmp_path, songs=3, seconds=1.0), ["drums"], 44100)
    first, again = ChunkSampler(songs, 4096, ("drums",), seed=7), ChunkSampler(songs, 4096, ("drums",), seed=7)
    other_seed = ChunkSampler(songs, 4096, ("drums",), seed=8)
    for position in (0, 5, len(first) + 3):  # also in the second epoch
        np.testing.assert_array_equal(first[position], again[position])
    assert not np.array_equal(first[0], other_seed[0])
    # Two ranks with batch 2 take exactly the slots of one process with batch 4.
    ranks = first.positions(5, 2, rank=0, world_size=2) + first.positions(5, 2, rank=1, world_size=2)
    assert ranks == first.positions(5, 4)


def test_validation_split_is_by_song_and_stable(tmp_path):
    songs = find_songs(make_corpus(tmp_path, songs=6, seconds=0.3), ["mixture"], 44100)
    training, validation = split_songs(songs, 2)
    assert len(validation) == 2 and {s.name for s in training}.isdisjoint(s.name for s in validation)
    assert split_songs(songs[::-1], 2)[1][0].name in {s.name for s in validation}
    with pytest.raises(CorpusError, match="cannot hold out"):
        split_songs(songs, 6)


def test_other_sample_rates_are_resampled_on_read(tmp_path):
    native, rate, frequency = 22050, 44100, 441.0
    t = np.arange(int(1.5 * native)) / native
    sine = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    stereo = np.stack([sine, sine], axis=1)
    write_song(tmp_path, "Sine", {source: stereo for source in SOURCES}, native, "musdb")
    song = find_songs(tmp_path, ["other"], rate)[0]
    assert song.frames == 2 * len(t)
    start = 10_001
    chunk = song.read("other", start, 4096)
    expected = 0.5 * np.sin(2 * np.pi * frequency * (start + np.arange(4096)) / rate)
    assert chunk.shape == (2, 4096)
    np.testing.assert_allclose(chunk[0], expected, atol=2e-3)


def test_missing_stem_is_a_one_line_error(tmp_path):
    root = make_corpus(tmp_path, songs=2, seconds=0.3)
    (root / "train" / "Song01" / "bass.wav").unlink()
    with pytest.raises(CorpusError, match=r"song 'Song01': missing bass") as error:
        find_songs(root, SOURCES, 44100)
    assert "\n" not in str(error.value)
    assert len(find_songs(root, ["mixture", "other"], 44100)) == 2  # phases that do not need bass still run


def test_unequal_lengths_are_refused(tmp_path):
    root = make_corpus(tmp_path, songs=2, seconds=0.3)
    path = root / "train" / "Song00" / "vocals.wav"
    audio, rate = sf.read(path)
    sf.write(path, audio[:-100], rate, subtype="FLOAT")
    with pytest.raises(CorpusError, match="unequal lengths"):
        find_songs(root, ["mixture", "vocals"], 44100)


def test_unreadable_file_is_refused(tmp_path):
    root = make_corpus(tmp_path, songs=2, seconds=0.3)
    (root / "train" / "Song00" / "drums.wav").write_bytes(b"RIFF but not really audio")
    with pytest.raises(CorpusError, match="drums.wav: unreadable audio") as error:
        find_songs(root, ["drums"], 44100)
    assert "\n" not in str(error.value)


def test_unknown_layout_and_missing_root(tmp_path):
    with pytest.raises(CorpusError, match="no such data folder"):
        find_songs(tmp_path / "absent", ["mixture"], 44100)
    with pytest.raises(CorpusError, match="neither the MUSDB18-HQ layout"):
        find_songs(tmp_path, ["mixture"], 44100)


def test_songs_shorter_than_a_chunk_are_left_out(tmp_path):
    songs = find_songs(make_corpus(tmp_path, songs=2, seconds=0.05), ["other"], 44100)
    with pytest.raises(CorpusError, match="at least 4096 samples"):
        ChunkSampler(songs, 4096, ("other",), seed=0)
