"""The corpus's singers sing the written notes, at the written times, and sound different from each other."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import numpy as np
import pytest
from scipy import signal

from unmix.train.corpus import singers
from unmix.train.corpus.score import Note

RATE = 22050
FORMANT_SINGERS = [name for name, singer in singers.SINGERS.items() if singer.kind == "formant"]
no_festival = pytest.mark.skipif(shutil.which("text2wave") is None, reason="Festival's text2wave is not installed")


def f0_cents_off(audio: np.ndarray, note: Note, rate: int) -> float:
    """How far (cents) the f0 in the steady middle of `note` is from its pitch: the median of 40 ms frames of
    normalized cross-correlation, on audio low-passed at 1.5× the written f0 so a strong upper harmonic cannot
    pass for the fundamental (a fundamental an octave off still would be measured as such)."""
    expected = 440.0 * 2 ** ((note.pitch - 69) / 12)
    sos = signal.butter(6, 1.5 * expected, "lowpass", fs=rate, output="sos")
    start, end = round((note.start + 0.3 * note.duration) * rate), round((note.start + 0.7 * note.duration) * rate)
    low = signal.sosfiltfilt(sos, audio[start - rate // 10 : end + rate // 10])[rate // 10 : -(rate // 10)]
    window, longest, shortest = int(0.04 * rate), int(rate / (0.4 * expected)), int(rate / (2.5 * expected))
    estimates = []
    for at in range(0, len(low) - window - longest, window // 2):
        frame = low[at : at + window + longest]
        reference = frame[:window]
        lagged = np.lib.stride_tricks.sliding_window_view(frame, window)[: longest + 1]
        correlation = lagged @ reference / np.sqrt(np.sum(lagged**2, axis=1) * np.sum(reference**2) + 1e-12)
        peaks = [
            lag
            for lag in range(max(shortest, 1), longest)
            if correlation[lag - 1] < correlation[lag] >= correlation[lag + 1]
        ]
        best = max(correlation[lag] for lag in peaks)
        lag = next(lag for lag in peaks if correlation[lag] >= 0.9 * best)
        left, middle, right = correlation[lag - 1 : lag + 2]
        refined = lag + 0.5 * (left - right) / (left - 2 * middle + right)
        estimates.append(rate / refined)
    return float(1200 * np.log2(np.median(estimates) / expected))


def melody(low: int, high: int) -> list[Note]:
    """Two phrases in `low`–`high`: a note, a 0.5 s rest, then two legato notes."""
    middle = (low + high) // 2
    return [
        Note(0.3, 0.6, low + 3, 100),
        Note(1.4, 0.5, middle, 90),
        Note(1.9, 0.7, high - 3, 110),
    ]


def band_levels(audio: np.ndarray, rate: int) -> np.ndarray:
    """Third-octave band levels (dB, relative to the total) from 200 Hz to 6.4 kHz."""
    frequencies, power = signal.welch(audio, rate, nperseg=2048)
    edges = 200 * 2 ** (np.arange(16) / 3)
    bands = np.array([power[(frequencies >= lo) & (frequencies < hi)].sum() for lo, hi in itertools.pairwise(edges)])
    return 10 * np.log10(bands / bands.sum())


@pytest.mark.parametrize("name", FORMANT_SINGERS)
def test_formant_singer_sings_the_written_pitches_and_nothing_else(name):
    singer = singers.SINGERS[name]
    notes = melody(singer.low, singer.high)
    audio = singers.sing(notes, name, np.random.default_rng(0), RATE, 3 * RATE)
    assert audio.shape == (3 * RATE,) and audio.dtype == np.float32
    assert 0.5 < np.max(np.abs(audio)) <= 1.0
    for note in notes:
        assert abs(f0_cents_off(audio, note, RATE)) < 50, note
    # silent before the first note, in the rest between the phrases and after the last note
    for start, end in ((0.0, 0.3), (0.9, 1.4), (2.6, 3.0)):
        assert np.max(np.abs(audio[round(start * RATE) : round(end * RATE)])) < 1e-6
    for note in notes:
        middle = audio[
            round((note.start + 0.3 * note.duration) * RATE) : round((note.start + 0.7 * note.duration) * RATE)
        ]
        assert np.sqrt(np.mean(middle**2)) > 0.03


def test_same_seed_same_song_other_seed_other_song():
    notes = melody(55, 72)
    first = singers.sing(notes, "tenor", np.random.default_rng(7), RATE, 3 * RATE)
    again = singers.sing(notes, "tenor", np.random.default_rng(7), RATE, 3 * RATE)
    other = singers.sing(notes, "tenor", np.random.default_rng(8), RATE, 3 * RATE)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)


def test_formant_presets_sound_different():
    notes = [Note(0.1 + 0.5 * i, 0.45, pitch, 100) for i, pitch in enumerate([57, 60, 62, 64, 60, 59, 57, 60])]
    levels = {
        name: band_levels(singers.sing(notes, name, np.random.default_rng(0), RATE, 4 * RATE + RATE // 2), RATE)
        for name in FORMANT_SINGERS
    }
    for a, b in itertools.combinations(FORMANT_SINGERS, 2):
        assert np.sqrt(np.mean((levels[a] - levels[b]) ** 2)) > 2.0, (a, b)
    # the operatic voice's singer's formant and the belter's pressed voice carry more 2–5 kHz energy than a bass
    for bright in ("operatic", "belter"):
        assert levels[bright][9:14].mean() > levels["bass"][9:14].mean() + 6


def test_a_phrase_outside_the_range_is_sung_octaves_away():
    note = Note(0.2, 0.8, 76, 100)  # E5, far above the bass's range (up to C4): sung two octaves down
    audio = singers.sing([note], "bass", np.random.default_rng(0), RATE, RATE + RATE // 4)
    assert abs(f0_cents_off(audio, Note(0.2, 0.8, 52, 100), RATE)) < 50


def test_notes_past_the_end_and_overlaps_are_cut():
    notes = [Note(0.1, 1.0, 60, 100), Note(0.5, 0.4, 64, 100), Note(2.0, 0.5, 60, 100)]
    audio = singers.sing(notes, "alto", np.random.default_rng(0), RATE, RATE)
    assert audio.shape == (RATE,)
    assert abs(f0_cents_off(audio, Note(0.5, 0.4, 64, 100), RATE)) < 50
    assert np.max(np.abs(audio[round(0.95 * RATE) :])) < 1e-6


def test_unknown_singer_is_refused():
    with pytest.raises(ValueError, match="unknown singer"):
        singers.sing([Note(0.0, 0.5, 60, 100)], "nobody", np.random.default_rng(0), RATE, RATE)


def test_silence_when_there_is_nothing_to_sing():
    audio = singers.sing([], "soprano", np.random.default_rng(0), RATE, RATE)
    assert audio.shape == (RATE,) and not audio.any()


def test_formant_singers_are_always_available():
    assert all(singers.available(singers.SINGERS[name]) for name in FORMANT_SINGERS)


def test_a_missing_festival_voice_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(singers, "_festival_voices", lambda: frozenset())
    assert not singers.available(singers.SINGERS["festival-kal"])
    with pytest.raises(RuntimeError, match="needs Festival's text2wave and its voice kal_diphone"):
        singers.sing([Note(0.0, 0.5, 50, 100)], "festival-kal", np.random.default_rng(0), RATE, RATE)


@no_festival
def test_festival_singer_follows_the_pitches_at_the_note_times():
    singer = singers.SINGERS["festival-kal"]
    if not singers.available(singer):
        pytest.skip("Festival's kal_diphone voice is not installed")
    notes = [Note(0.5, 0.6, 48, 100), Note(1.1, 0.6, 55, 100), Note(1.7, 0.8, 52, 100), Note(3.0, 0.7, 57, 100)]
    audio = singers.sing(notes, "festival-kal", np.random.default_rng(0), RATE, 4 * RATE)
    assert audio.shape == (4 * RATE,) and audio.dtype == np.float32 and np.max(np.abs(audio)) <= 1.0
    for note in notes:
        assert abs(f0_cents_off(audio, note, RATE)) < 100, note
    # phrases are placed at their first note: silence before each, sound from (nearly) its start
    assert np.max(np.abs(audio[: round(0.5 * RATE)])) < 1e-6
    assert np.max(np.abs(audio[round(2.5 * RATE) : round(3.0 * RATE)])) < 1e-6
    for start in (0.5, 3.0):
        onset = audio[round(start * RATE) : round((start + 0.1) * RATE)]
        assert np.max(np.abs(onset)) > 0.05


@no_festival
def test_festival_lyrics_are_one_syllable_per_note():
    """Singing mode gives each word one note only when the voice splits it into one syllable."""
    for name, voice in singers.FESTIVAL_VOICES.items():
        if not singers.available(singers.SINGERS[name]):
            continue
        words = singers.WORDS[singers.SINGERS[name].language]
        program = f"(voice_{voice})\n" + "".join(
            f'(format t "%d\\n" (length (utt.relation.items (utt.synth (Utterance Text "{word}")) \'Syllable)))\n'
            for word in words
        )
        counts = subprocess.run(["festival", "--pipe"], input=program, capture_output=True, text=True).stdout.split()
        assert counts == ["1"] * len(words), name


@no_festival
def test_festival_failure_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(singers.FESTIVAL_VOICES, "festival-kal", "no_such_voice")
    monkeypatch.setattr(singers, "_festival_voices", lambda: frozenset({"no_such_voice"}))
    with pytest.raises(RuntimeError, match="text2wave could not sing a phrase with Festival voice no_such_voice"):
        singers.sing([Note(0.0, 0.5, 50, 100)], "festival-kal", np.random.default_rng(0), RATE, RATE)


@no_festival
def test_a_phrase_festival_crashes_on_is_sung_a_little_longer(tmp_path):
    if not singers.available(singers.SINGERS["festival-czech-ph"]):
        pytest.skip("Festival's czech_ph voice is not installed")
    score = tmp_path / "phrase.xml"  # the phrase czech_ph crashes on (SIGSEGV), sung as written
    score.write_text(singers._singing_xml([Note(0.0, 1.5289, 55, 100)], ["la"]))
    command = ["text2wave", "-mode", "singing", "-eval", "(voice_czech_ph)", str(score), "-o", str(tmp_path / "a.wav")]
    if subprocess.run(command, capture_output=True).returncode >= 0:
        pytest.skip("this Festival sings the phrase as written: nothing to work around")
    audio = singers.sing([Note(0.25, 1.5289, 55, 100)], "festival-czech-ph", np.random.default_rng(0), RATE, 2 * RATE)
    assert np.max(np.abs(audio[round(0.3 * RATE) : round(1.7 * RATE)])) > 0.05
