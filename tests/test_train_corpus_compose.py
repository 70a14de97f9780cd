"""The corpus's composition rules: every style writes a valid, varied song that fills its length."""

import numpy as np
import pytest

from unmix.train.corpus.compose import METERS, STYLES, compose
from unmix.train.corpus.score import Note, Song

SINGERS = {"alto": (55, 74), "tenor": (48, 67), "soprano": (60, 81)}
STEMS = ("drums", "bass", "other", "vocals")
VOICE_PRESETS = {52, 53, 54, 85, 91}
KITS = {0, 8, 16, 24, 25, 32, 40, 48}
BASS_PROGRAMS = set(range(32, 40)) | {43, 58, 87}
CASES = [(0, 12.0), (1, 40.0), (2, 25.0)]  # (seed, seconds)


def _coverage(song: Song, stem: str) -> float:
    """The share of the song some note of the stem sounds in (the union of the notes' spans)."""
    spans = sorted((n.start, n.start + n.duration) for p in song.parts if p.stem == stem for n in p.notes)
    covered, reach = 0.0, 0.0
    for start, end in spans:
        covered += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return covered / song.seconds


def _runs_between_breaths(notes: list[Note]) -> list[float]:
    """How long each stretch of singing lasts between rests of at least 0.25 s."""
    runs, start = [], notes[0].start
    for a, b in zip(notes, notes[1:], strict=False):
        if b.start - (a.start + a.duration) >= 0.25:
            runs.append(a.start + a.duration - start)
            start = b.start
    return [*runs, notes[-1].start + notes[-1].duration - start]


@pytest.fixture(scope="module")
def songs() -> dict[tuple[str, int, float], Song]:
    return {
        (style, seed, seconds): compose(np.random.default_rng(seed), seconds, style, SINGERS)
        for style in STYLES
        for seed, seconds in CASES
    }


def test_the_styles_really_differ():
    assert len(STYLES) >= 12
    meters = {groove.meter for style in STYLES.values() for groove in style.grooves}
    assert len({METERS[m].numerator for m in meters}) >= 3
    assert len({style.tempo for style in STYLES.values()}) >= 8
    assert len({style.form for style in STYLES.values()}) >= 5
    assert min(lo for lo, _ in (s.tempo for s in STYLES.values())) <= 60
    assert max(hi for _, hi in (s.tempo for s in STYLES.values())) >= 180


def test_every_pattern_fills_its_bar():
    for name, style in STYLES.items():
        for groove in style.grooves:
            patterns = [*groove.drums.values(), *groove.percussion.values(), groove.bass, groove.comp]
            assert all(len(p) == METERS[groove.meter].steps for p in patterns), name


@pytest.mark.parametrize("style", sorted(STYLES))
def test_notes_are_valid_and_inside_the_song(songs, style):
    for seed, seconds in CASES:
        song = songs[style, seed, seconds]
        assert song.seconds == seconds and song.style == style
        for part in song.parts:
            assert -1 <= part.pan <= 1 and -6 <= part.level_db <= 6
            low, high = (35, 81) if part.instrument.kind == "kit" else (0, 127)
            for note in part.notes:
                assert 0 <= note.start and note.start + note.duration <= seconds + 1e-9 and note.duration > 0
                assert 1 <= note.velocity <= 127 and low <= note.pitch <= high


@pytest.mark.parametrize("style", sorted(STYLES))
def test_the_form_covers_the_song(songs, style):
    for seed, seconds in CASES:
        form = songs[style, seed, seconds].form
        assert form[0][1] == 0 and form[-1][2] == seconds
        assert all(a[2] == b[1] for a, b in zip(form, form[1:], strict=False))
        assert all(start < end for _, start, end in form)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_stem_sounds_in_a_fifth_of_the_song(songs, style):
    for seed, seconds in CASES:
        song = songs[style, seed, seconds]
        for stem in STEMS:
            assert _coverage(song, stem) >= 0.2, (stem, seed, seconds)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_instruments_fit_their_stems(songs, style):
    for seed, seconds in CASES:
        for part in songs[style, seed, seconds].parts:
            kind = part.instrument.kind
            assert kind == {"drums": "kit", "vocals": "singer"}.get(part.stem, "program")
            if kind == "kit":
                assert part.instrument.program in KITS
            if kind == "program":
                assert part.instrument.program not in VOICE_PRESETS
            if part.stem == "bass":
                assert part.instrument.program in BASS_PROGRAMS


@pytest.mark.parametrize("style", sorted(STYLES))
def test_singers_sing_one_note_at_a_time_in_range_and_breathe(songs, style):
    for seed, seconds in CASES:
        for part in songs[style, seed, seconds].parts:
            if part.stem != "vocals":
                continue
            low, high = SINGERS[part.instrument.voice]
            notes = part.notes
            assert all(low <= n.pitch <= high and n.duration >= 0.08 for n in notes)
            assert all(a.start + a.duration <= b.start for a, b in zip(notes, notes[1:], strict=False))
            assert max(_runs_between_breaths(notes)) <= 12.0


def test_one_singer_sings_lead_and_backing():
    song = compose(np.random.default_rng(5), 40.0, "gospel", {"bass": (40, 60)})
    vocals = [p for p in song.parts if p.stem == "vocals"]
    assert vocals and all(p.instrument.voice == "bass" for p in vocals)
    assert all(40 <= n.pitch <= 60 for p in vocals for n in p.notes)


def test_the_same_seed_gives_the_same_song_and_others_differ():
    first = compose(np.random.default_rng(11), 30.0, "swing", SINGERS)
    assert compose(np.random.default_rng(11), 30.0, "swing", SINGERS) == first
    assert compose(np.random.default_rng(12), 30.0, "swing", SINGERS) != first


def test_a_long_verse_chorus_song_has_a_bass_intro_a_breakdown_and_a_key_change():
    song = compose(np.random.default_rng(3), 120.0, "ballad", SINGERS)
    names = [name for name, _, _ in song.form]
    assert names[0] == "intro" and "breakdown" in names and names[-1] == "chorus"
    intro_end = song.form[0][2]
    assert all(n.start >= intro_end - 0.05 for p in song.parts if p.stem != "bass" for n in p.notes)
    bass = next(p for p in song.parts if p.stem == "bass").notes
    choruses = [start for name, start, _ in song.form if name == "chorus"]
    first, last = (min(bass, key=lambda n: abs(n.start - at)).pitch for at in (choruses[0], choruses[-1]))
    assert (last - first) % 12 in (1, 2)  # the same chord, a semitone or a tone up
