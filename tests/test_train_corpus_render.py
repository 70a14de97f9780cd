"""Our corpus generator end to end: FluidSynth plays real notes, songs land whole in the MUSDB18-HQ layout."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from tiny_soundfont import write_tiny_soundfont

from unmix.train.corpus import fluidsynth
from unmix.train.corpus.render import render_corpus
from unmix.train.corpus.resources import POOLS, Pool, check_allowed
from unmix.train.corpus.score import Instrument, Note
from unmix.train.data import STEMS, CorpusError, find_audio, song_folders

pytestmark = pytest.mark.skipif(not fluidsynth.available(), reason="libfluidsynth3 is not installed")
FORMANT_SINGERS = ("soprano", "tenor", "baritone")  # need nothing but numpy: the test runs wherever FluidSynth does


@pytest.fixture(scope="module")
def soundfont(tmp_path_factory):
    return write_tiny_soundfont(tmp_path_factory.mktemp("sf") / "tiny.sf2")


def _pool(styles=("waltz", "reggae", "swing")) -> Pool:
    return dataclasses.replace(POOLS["train"], soundfonts=(), singers=FORMANT_SINGERS, styles=styles)


def _peak_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.argmax(spectrum) * sample_rate / audio.size)


def test_fluidsynth_plays_each_note_at_its_time_and_pitch(soundfont):
    with fluidsynth.SoundFontSynth(soundfont, 44100) as synth:
        audio = synth.render(Instrument("program", 33), [Note(0.5, 1.0, 69, 100), Note(2.0, 0.5, 81, 90)], 3 * 44100)
        kit = synth.render(Instrument("kit", 25), [Note(0.25, 0.25, 36, 100)], 44100)
    assert audio.shape == (2, 3 * 44100) and audio.dtype == np.float32
    assert not audio[:, : int(0.49 * 44100)].any()  # nothing before the first note
    assert abs(_peak_hz(audio[0, 30000:60000], 44100) - 440.0) < 5.0
    assert abs(_peak_hz(audio[0, 90000:108000], 44100) - 880.0) < 5.0
    assert np.abs(audio[:, int(1.8 * 44100) : int(1.95 * 44100)]).max() < 1e-3  # the first note ended
    assert np.abs(kit[:, 12000:20000]).max() > 0.01 and not kit[:, :11000].any()


def test_a_reserved_resource_is_refused():
    for name in ("TimGM6mb.sf2", "festival-ked", "planetblupi-song", "AVL_Drumkits.sf2", "bach-chorale"):
        with pytest.raises(CorpusError, match="reserved"):
            check_allowed(name)
    with pytest.raises(CorpusError, match="reserved"):
        render_corpus("unused", "train", 1, 10.0, 0, dataclasses.replace(_pool(), singers=("ked",)))


def test_the_pools_share_nothing():
    train, held_out = POOLS["train"], POOLS["held-out"]
    assert not set(train.soundfonts) & set(held_out.soundfonts)
    assert not set(train.singers) & set(held_out.singers)
    assert not set(train.styles) & set(held_out.styles)


def test_songs_land_whole_in_the_musdb_layout(tmp_path, soundfont):
    root = tmp_path / "corpus"
    stale = root / "train" / f".Varied - 0001.partial-{os.getpid() + 1}"
    stale.mkdir(parents=True)  # what a killed run leaves
    folders = render_corpus(root, "train", 3, 10.0, 7, _pool(), (soundfont,), workers=2)
    assert folders == song_folders(root, "train") and not stale.exists()
    styles = set()
    for folder in folders:
        audio = {}
        for source in ("mixture", *STEMS):
            samples, rate = soundfile.read(find_audio(folder, source), dtype="int16")
            assert rate == 44100 and samples.shape == (441000, 2)
            audio[source] = samples.astype(np.int32)
        assert np.array_equal(audio["mixture"], sum(audio[stem] for stem in STEMS))  # exactly the sum of its stems
        for stem in STEMS:  # every stem sounds somewhere
            assert np.abs(audio[stem]).max() > 300, (folder.name, stem)
        metadata = json.loads((folder / "song.json").read_text())
        assert metadata["soundfont"] == "tiny.sf2" and metadata["seed"] == [7, int(folder.name[-4:])]
        assert {part["stem"] for part in metadata["parts"]} == set(STEMS)
        styles.add(metadata["style"])
    assert len({np.abs(soundfile.read(find_audio(f, "vocals"))[0]).sum() for f in folders}) == 3  # not one song thrice

    # Kept as they are on a second run; the same seed renders the same song elsewhere.
    stamps = [(folder / "mixture.wav").stat().st_mtime_ns for folder in folders]
    render_corpus(root, "train", 3, 10.0, 7, _pool(), (soundfont,))
    assert stamps == [(folder / "mixture.wav").stat().st_mtime_ns for folder in folders]
    again = render_corpus(tmp_path / "again", "train", 1, 10.0, 7, _pool(), (soundfont,))
    assert (again[0] / "mixture.wav").read_bytes() == (folders[0] / "mixture.wav").read_bytes()


def test_the_command_renders_and_refuses_bad_input_in_one_line(tmp_path, soundfont):
    command = [sys.executable, "-m", "unmix.train.cli", "corpus", str(tmp_path / "c"), "--songs", "1"]
    bad = subprocess.run([*command, "--pool", "nowhere"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no pool 'nowhere'" in bad.stderr
    short = subprocess.run([*command, "--seconds", "3"], capture_output=True, text=True)
    assert short.returncode == 2 and "too short" in short.stderr
    assert not (tmp_path / "c").exists()  # nothing written for bad input


def test_every_pool_names_real_styles_and_singers():
    from unmix.train.corpus.compose import STYLES
    from unmix.train.corpus.singers import SINGERS

    for pool in POOLS.values():
        assert set(pool.styles) <= set(STYLES) and set(pool.singers) <= set(SINGERS)
    assert set(STYLES) == set(POOLS["train"].styles) | set(POOLS["held-out"].styles)  # every style in one pool


def test_a_pool_that_cannot_render_the_same_everywhere_is_refused(tmp_path, soundfont):
    for pool, message in (
        (dataclasses.replace(_pool(), singers=("soprano", "nobody")), "no such singer or style: nobody"),
        (dataclasses.replace(_pool(), styles=("polka", "waltz")), "no such singer or style: polka"),
        (dataclasses.replace(_pool(), singers=()), "at least one singer"),
    ):
        with pytest.raises(CorpusError, match=message):
            render_corpus(tmp_path / "c", "train", 1, 10.0, 0, pool, (soundfont,))
    assert not (tmp_path / "c").exists()


def test_a_machine_without_festival_is_told_what_to_install(tmp_path, soundfont, monkeypatch):
    from unmix.train.corpus import singers

    monkeypatch.setattr(singers.shutil, "which", lambda name: None)  # as on a machine without text2wave
    pool = dataclasses.replace(_pool(), singers=("tenor", "festival-italian-pc"))
    with pytest.raises(CorpusError, match="festival-italian-pc cannot sing here: apt-get install festival festvox-ita"):
        render_corpus(tmp_path / "c", "train", 1, 10.0, 0, pool, (soundfont,))


def test_a_synthesizer_failure_names_the_song_and_leaves_no_half_song(tmp_path, soundfont):
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\0\0\0\0sfbk")  # a SoundFont FluidSynth cannot load
    with pytest.raises(CorpusError, match="Varied - 0000: .*broken.sf2: FluidSynth cannot load"):
        render_corpus(tmp_path / "c", "train", 1, 10.0, 0, dataclasses.replace(_pool(), soundfonts=()), (broken,))
    assert list((tmp_path / "c" / "train").iterdir()) == []
