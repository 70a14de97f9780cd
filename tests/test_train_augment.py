"""Training augmentation: per-stem gain, polarity and EQ, speed; consistent mixtures, reproducible draws."""

from __future__ import annotations

import numpy as np
import pytest
from synth_corpus import make_corpus, write_song

from unmix.train.augment import Augmentation, change_speed, shelve
from unmix.train.data import SOURCES, STEMS, find_songs
from unmix.train.options import OptionsError, TrainOptions
from unmix.train.sampling import ChunkSampler, expand_sources

RATE = 44100
EVERYTHING = ("mixture", *STEMS)  # an example with the mixture and every stem, to check that they add up


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    return find_songs(make_corpus(tmp_path_factory.mktemp("corpus"), songs=3, seconds=1.0), SOURCES, RATE)


def _sampler(songs, augment=None, sources=EVERYTHING, chunk=8192):
    return ChunkSampler(songs, chunk, sources, seed=3, augment=augment)


def _level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x**2))


def test_per_stem_changes_keep_the_place_and_blend_and_the_mixture_sums_them(songs):
    plain, changed = _sampler(songs), _sampler(songs, Augmentation(gain_db=6.0, polarity=True))
    signs = set()
    for position in range(8):
        before, after = plain[position], changed[position]
        for row in range(1, len(EVERYTHING)):  # the same excerpt, scaled: the draws for place and blend come first
            ratio = np.dot(after[row, 0], before[row, 0]) / np.dot(before[row, 0], before[row, 0])
            np.testing.assert_allclose(after[row], ratio * before[row], rtol=1e-4, atol=1e-6)
            assert abs(20 * np.log10(abs(ratio))) <= 6.0 + 1e-3
            signs.add(np.sign(ratio))
        np.testing.assert_allclose(after[0], after[1:].sum(axis=0), atol=1e-5)  # the mixture of the changed stems
    assert signs == {-1.0, 1.0}


def test_examples_stay_a_function_of_seed_and_position(songs):
    augment = Augmentation(gain_db=3.0, polarity=True, eq_db=6.0, speed=0.1)
    a, b = _sampler(songs, augment), _sampler(songs, augment)
    np.testing.assert_array_equal(a[5], b[5])
    assert not np.array_equal(a[5], a[6])
    assert a[5].shape == (len(EVERYTHING), 1, 8192) and a[5].dtype == np.float32


def test_a_phase_2_example_reads_the_stems_when_they_change(songs):
    assert expand_sources(("mixture", "vocals"), 0.0) == {"mixture", "vocals"}
    assert expand_sources(("mixture", "vocals"), 0.0, Augmentation(eq_db=3.0)) == set(SOURCES)
    assert expand_sources(("vocals",), 0.0, Augmentation(eq_db=3.0)) == {"vocals"}
    example = _sampler(songs, Augmentation(eq_db=6.0), sources=("mixture", "vocals"))[2]
    reference = _sampler(songs, sources=("mixture", "vocals"))[2]
    assert not np.allclose(example, reference)


def test_shelves_lift_and_cut_the_ends_of_the_spectrum():
    t = np.arange(RATE) / RATE
    for frequency, expected in ((50, 6.0), (1000, 0.0), (15000, -6.0)):
        tone = np.sin(2 * np.pi * frequency * t)[None].astype(np.float32)
        out = shelve(tone, RATE, 6.0, -6.0)
        assert abs(_level_db(out[:, RATE // 2 :]) - _level_db(tone[:, RATE // 2 :]) - expected) < 0.3


def test_a_faster_example_is_higher_and_still_a_whole_chunk(tmp_path):
    t = np.arange(RATE) / RATE
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([tone, tone], axis=1)
    sources = {stem: stereo for stem in STEMS} | {"mixture": 4 * stereo}
    write_song(tmp_path, "Tone", sources, RATE, "musdb")
    (song,) = find_songs(tmp_path, SOURCES, RATE)
    sampler = ChunkSampler([song], 16384, ("mixture", "bass"), seed=0, augment=Augmentation(speed=0.2))
    pitches = set()
    for position in range(6):
        example = sampler[position]
        spectrum = np.abs(np.fft.rfft(example[1, 0, 1024:-1024]))
        pitch = np.argmax(spectrum) * RATE / (16384 - 2048)
        assert 440 * 0.8 - 5 < pitch < 440 * 1.2 + 5 and example.shape == (2, 1, 16384)
        pitches.add(round(pitch))
        np.testing.assert_allclose(example[0], 4 * example[1], atol=1e-4)  # one speed for the whole example
    assert len(pitches) > 1
    direct = change_speed(stereo.T[:, :20000], 1.25, 16000)
    assert direct.shape == (2, 16000)


def test_options_check_the_ranges_and_old_runs_resume():
    with pytest.raises(OptionsError, match="speed"):
        TrainOptions(data="d", out="o", speed=0.6)
    with pytest.raises(OptionsError, match="dB"):
        TrainOptions(data="d", out="o", gain_db=-1.0)
    options = TrainOptions(data="d", out="o", eq_db=3.0)
    assert options.augmentation == Augmentation(eq_db=3.0)
    saved = {key: value for key, value in TrainOptions(data="d", out="o").to_json().items() if key != "speed"}
    assert TrainOptions(data="d", out="o").differences(saved) == []  # a run saved before `speed` existed
    assert options.differences(saved) == ["eq_db: saved 0.0, given 3.0"]
