"""The corpus's singers: synthetic voices that sing a part's notes on random lyrics.

Two kinds of singer. "formant" singers are our own source-filter synthesizer: a band-limited glottal pulse train
(Rosenberg pulse from wavetables) at the note's f0 with vibrato, scoops, portamento, jitter, shimmer and breath noise,
shaped by five formant resonators per vowel, with consonant onsets (plosive gaps and bursts, fricative noise, nasal
murmur, liquids); presets differ in vocal-tract size, glottal pulse shape, spectral tilt, vibrato and resonances
(singer's formant, nasal twang). "festival" singers are Festival's diphone voices in its singing mode, one phrase per
`text2wave` call, on words of the voice's language. Every singer sings each note inside the note's own time span
and is silent elsewhere, so the vocal stem lines up with its score.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from .mix import peaking_section
from .score import Note


@dataclass(frozen=True)
class Singer:
    """A singer of `SINGERS`: `kind` "formant" (our synthesizer) or "festival" (a Festival voice), its comfortable
    MIDI range `low`–`high` (phrases outside it are moved by octaves) and its lyrics' `language` ("en", "it", "cs",
    "fi", or "vowels" for wordless singing)."""

    name: str
    kind: str
    low: int
    high: int
    language: str


@dataclass(frozen=True)
class Timbre:
    """How a formant singer sounds.

    formant_scale: vocal-tract size (formant frequencies × this; 1 = adult male); bandwidth_scale: formant damping;
    open_quotient: the open share of a glottal period (high: soft, breathy; low: pressed, bright); tilt_db: extra
    source slope in dB per octave; breath: aspiration noise level; jitter_cents, shimmer: cycle-to-cycle pitch and
    level wobble; vibrato_hz, vibrato_cents, vibrato_delay: vibrato rate range, depth (peak) and onset delay (s);
    scoop_cents: how far below its pitch a note after a rest may start; glide: portamento time (s) between legato
    notes; attack, release: note envelope ramps (s); ring_hz, ring_db: a resonance added to every vowel (the
    singer's formant near 3 kHz, or a twang); nasal: nasal coupling (a murmur peak and an antiresonance, 0–1).
    """

    formant_scale: float
    bandwidth_scale: float
    open_quotient: float
    tilt_db: float
    breath: float
    jitter_cents: float
    shimmer: float
    vibrato_hz: tuple[float, float]
    vibrato_cents: float
    vibrato_delay: float
    scoop_cents: float
    glide: float
    attack: float
    release: float
    ring_hz: float = 3000.0
    ring_db: float = 0.0
    nasal: float = 0.0


TIMBRES = {
    "soprano": Timbre(
        formant_scale=1.18,
        bandwidth_scale=1.0,
        open_quotient=0.6,
        tilt_db=-1.0,
        breath=0.04,
        jitter_cents=4.0,
        shimmer=0.03,
        vibrato_hz=(5.0, 6.0),
        vibrato_cents=45.0,
        vibrato_delay=0.25,
        scoop_cents=60.0,
        glide=0.07,
        attack=0.05,
        release=0.08,
    ),
    "alto": Timbre(
        formant_scale=1.1,
        bandwidth_scale=1.1,
        open_quotient=0.62,
        tilt_db=-2.0,
        breath=0.05,
        jitter_cents=5.0,
        shimmer=0.03,
        vibrato_hz=(4.8, 5.8),
        vibrato_cents=35.0,
        vibrato_delay=0.3,
        scoop_cents=80.0,
        glide=0.08,
        attack=0.06,
        release=0.09,
    ),
    "tenor": Timbre(
        formant_scale=1.0,
        bandwidth_scale=1.0,
        open_quotient=0.55,
        tilt_db=0.0,
        breath=0.03,
        jitter_cents=5.0,
        shimmer=0.03,
        vibrato_hz=(5.0, 6.2),
        vibrato_cents=35.0,
        vibrato_delay=0.3,
        scoop_cents=70.0,
        glide=0.06,
        attack=0.04,
        release=0.07,
    ),
    "baritone": Timbre(
        formant_scale=0.94,
        bandwidth_scale=1.1,
        open_quotient=0.58,
        tilt_db=-1.5,
        breath=0.03,
        jitter_cents=6.0,
        shimmer=0.04,
        vibrato_hz=(4.6, 5.6),
        vibrato_cents=30.0,
        vibrato_delay=0.35,
        scoop_cents=60.0,
        glide=0.08,
        attack=0.05,
        release=0.08,
    ),
    "bass": Timbre(
        formant_scale=0.88,
        bandwidth_scale=1.2,
        open_quotient=0.6,
        tilt_db=-2.5,
        breath=0.03,
        jitter_cents=7.0,
        shimmer=0.04,
        vibrato_hz=(4.5, 5.3),
        vibrato_cents=25.0,
        vibrato_delay=0.4,
        scoop_cents=50.0,
        glide=0.09,
        attack=0.06,
        release=0.1,
    ),
    "child": Timbre(
        formant_scale=1.32,
        bandwidth_scale=0.9,
        open_quotient=0.55,
        tilt_db=-0.5,
        breath=0.06,
        jitter_cents=6.0,
        shimmer=0.04,
        vibrato_hz=(5.5, 6.5),
        vibrato_cents=15.0,
        vibrato_delay=0.4,
        scoop_cents=40.0,
        glide=0.05,
        attack=0.03,
        release=0.06,
    ),
    "breathy": Timbre(
        formant_scale=1.12,
        bandwidth_scale=1.4,
        open_quotient=0.8,
        tilt_db=-7.0,
        breath=0.5,
        jitter_cents=5.0,
        shimmer=0.05,
        vibrato_hz=(4.8, 5.6),
        vibrato_cents=12.0,
        vibrato_delay=0.5,
        scoop_cents=120.0,
        glide=0.1,
        attack=0.08,
        release=0.12,
    ),
    "belter": Timbre(
        formant_scale=1.05,
        bandwidth_scale=0.8,
        open_quotient=0.38,
        tilt_db=4.0,
        breath=0.06,
        jitter_cents=9.0,
        shimmer=0.05,
        vibrato_hz=(5.2, 6.5),
        vibrato_cents=25.0,
        vibrato_delay=0.3,
        scoop_cents=150.0,
        glide=0.05,
        attack=0.02,
        release=0.05,
        ring_hz=3300.0,
        ring_db=6.0,
    ),
    "operatic": Timbre(
        formant_scale=1.0,
        bandwidth_scale=0.9,
        open_quotient=0.5,
        tilt_db=0.0,
        breath=0.02,
        jitter_cents=3.0,
        shimmer=0.02,
        vibrato_hz=(5.2, 6.2),
        vibrato_cents=80.0,
        vibrato_delay=0.15,
        scoop_cents=50.0,
        glide=0.12,
        attack=0.06,
        release=0.08,
        ring_hz=2900.0,
        ring_db=12.0,
    ),
    "twang": Timbre(
        formant_scale=1.08,
        bandwidth_scale=0.8,
        open_quotient=0.45,
        tilt_db=2.0,
        breath=0.04,
        jitter_cents=6.0,
        shimmer=0.04,
        vibrato_hz=(5.5, 6.5),
        vibrato_cents=20.0,
        vibrato_delay=0.35,
        scoop_cents=100.0,
        glide=0.04,
        attack=0.03,
        release=0.06,
        ring_hz=2600.0,
        ring_db=8.0,
        nasal=0.7,
    ),
}

SINGERS: dict[str, Singer] = {
    singer.name: singer
    for singer in (
        Singer("soprano", "formant", 60, 81, "it"),
        Singer("alto", "formant", 53, 74, "en"),
        Singer("tenor", "formant", 48, 69, "it"),
        Singer("baritone", "formant", 43, 65, "en"),
        Singer("bass", "formant", 38, 60, "vowels"),
        Singer("child", "formant", 60, 79, "en"),
        Singer("breathy", "formant", 52, 72, "en"),
        Singer("belter", "formant", 52, 76, "en"),
        Singer("operatic", "formant", 55, 79, "it"),
        Singer("twang", "formant", 50, 72, "en"),
        # Festival's diphone voices stop following the written pitch above ~480 Hz (MIDI 71): 69 is the top.
        Singer("festival-kal", "festival", 43, 65, "en"),
        Singer("festival-italian-lp", "festival", 55, 69, "it"),
        Singer("festival-italian-pc", "festival", 43, 65, "it"),
        Singer("festival-czech", "festival", 43, 65, "cs"),
        Singer("festival-czech-ph", "festival", 43, 65, "cs"),
        Singer("festival-finnish-lj", "festival", 55, 69, "fi"),
        Singer("festival-finnish-mv", "festival", 43, 65, "fi"),
    )
}
# The Festival voice behind each festival singer. cmu_us_slt_arctic_hts is left out: in singing mode it ignores the
# written durations and pitches (four 1 s notes come out as 1.35 s of speech near one pitch).
FESTIVAL_VOICES = {
    "festival-kal": "kal_diphone",
    "festival-italian-lp": "lp_diphone",
    "festival-italian-pc": "pc_diphone",
    "festival-czech": "czech_machac",
    "festival-czech-ph": "czech_ph",
    "festival-finnish-lj": "suo_fi_lj_diphone",
    "festival-finnish-mv": "hy_fi_mv_diphone",
}
FESTIVAL_RETRY_STRETCHES = (1.0, 1.01, 0.99, 1.02, 0.98)  # see `_text2wave`
# The Debian package of each festival singer's voice (Festival itself: `festival`).
FESTIVAL_PACKAGES = {
    "festival-kal": "festvox-kallpc16k",
    "festival-italian-lp": "festvox-italp16k",
    "festival-italian-pc": "festvox-itapc16k",
    "festival-czech": "festvox-czech-machac",
    "festival-czech-ph": "festvox-czech-ph",
    "festival-finnish-lj": "festvox-suopuhe-lj",
    "festival-finnish-mv": "festvox-suopuhe-mv",
}

# Festival lyrics: one-syllable words, so each word carries exactly one note's pitch and duration (ASCII only:
# the voices read their own 8-bit encodings).
WORDS = {
    "en": "la love night day heart sky fly home sun blue see me you go dream light rain time soul way down run "
    "stay hold free high say know feel oh yeah gold star".split(),
    "it": "la mar sol cuor per con non ma se tu mi ti re do fa tre dir ver fin bel pan sal va sto qui "
    "no si gran cor".split(),
    "cs": "la den noc les sen dum pes nos lom ty my vy on ten kam tam sam dal mir hrad ret vir most sad".split(),
    "fi": "la maa puu kuu suu tuo nyt sun mun on ja ei kai vai sen syy voi tie jo niin se me te he luo sai".split(),
}

# Formant syllables: onset consonants per language ("" is a bare vowel), weighted by repetition.
ONSETS = {
    "en": ["", "", "l", "m", "n", "s", "sh", "t", "k", "d", "b", "h", "w", "y", "f", "r", "p", "g"],
    "it": ["", "l", "l", "m", "n", "r", "t", "d", "s", "v", "p", "k", "b", "f"],
    "cs": ["", "l", "m", "n", "r", "t", "d", "s", "z", "v", "p", "k", "h", "sh"],
    "fi": ["", "l", "m", "n", "r", "t", "s", "v", "p", "k", "h", "y"],
    "vowels": ["", "", "", "h", "m", "n", "d", "l"],
}
VOWELS = {"en": "aeiou", "it": "aeiou", "cs": "aeiou", "fi": "aeiou", "vowels": "aou"}

# Formant frequencies (Hz, adult male speech, F1–F5) of the vowels and of the sonorant consonants' steady parts.
FORMANTS = {
    "a": (730, 1100, 2450, 3300, 4200),
    "e": (500, 1750, 2500, 3400, 4300),
    "i": (290, 2250, 2900, 3500, 4400),
    "o": (470, 830, 2500, 3300, 4200),
    "u": (330, 780, 2300, 3300, 4200),
    "m": (250, 1000, 2200, 3300, 4200),
    "n": (250, 1500, 2500, 3300, 4200),
    "l": (360, 1300, 2700, 3300, 4200),
    "r": (420, 1300, 1600, 3300, 4200),
    "w": (300, 700, 2200, 3300, 4200),
    "y": (280, 2200, 3000, 3500, 4400),
}
BANDWIDTHS = (80.0, 100.0, 130.0, 180.0, 250.0)
# Nasals are murmurs: wide upper formants hide everything above F1.
NASAL_BANDWIDTHS = (60.0, 400.0, 500.0, 500.0, 500.0)

# Obstruent onsets: (noise band low, high in Hz, noise length s, voiced, plosive). Plosives close (silence) before
# their burst; unvoiced ones are followed by aspiration before voicing starts.
OBSTRUENTS = {
    "p": (300.0, 1500.0, 0.008, False, True),
    "t": (3000.0, 7000.0, 0.01, False, True),
    "k": (1500.0, 3500.0, 0.012, False, True),
    "b": (300.0, 1500.0, 0.006, True, True),
    "d": (2500.0, 6000.0, 0.006, True, True),
    "g": (1200.0, 3000.0, 0.008, True, True),
    "s": (4500.0, 9500.0, 0.09, False, False),
    "sh": (2000.0, 5500.0, 0.09, False, False),
    "f": (1200.0, 8000.0, 0.07, False, False),
    "z": (4500.0, 9500.0, 0.07, True, False),
    "v": (1200.0, 8000.0, 0.06, True, False),
}

PHRASE_GAP = 0.3  # s: a longer rest ends a phrase
LEGATO_GAP = 0.02  # s: notes closer than this are sung legato (no envelope gap, a pitch glide)
CROSSFADE = 0.02  # s: between a consonant's and its vowel's resonances
TABLE_LENGTH = 2048
TABLE_LOWEST_HZ = 40.0
TABLES_PER_OCTAVE = 4


def available(singer: Singer) -> bool:
    """Whether `singer` can sing here: formant singers always can, Festival ones need `text2wave` and the voice."""
    if singer.kind == "formant":
        return True
    return shutil.which("text2wave") is not None and FESTIVAL_VOICES.get(singer.name, "") in _festival_voices()


def sing(notes: Sequence[Note], singer: str, rng: np.random.Generator, sample_rate: int, frames: int) -> np.ndarray:
    """Sing `notes` (a monophonic melody; overlaps are cut at the next note's start) with the singer named `singer`.

    Lyrics, vibrato and the other random choices come from `rng`, so the same generator state gives the same audio.
    Phrases outside the singer's range are moved by whole octaves. Returns mono float32 audio of shape (frames,) at
    `sample_rate`: each note sung inside its own time span, silence elsewhere, peak at most 1.
    """
    if singer not in SINGERS:
        raise ValueError(f"unknown singer {singer!r}; known: {', '.join(SINGERS)}")
    spec = SINGERS[singer]
    if not available(spec):
        raise RuntimeError(f"singer {singer} needs Festival's text2wave and its voice {FESTIVAL_VOICES[singer]}")
    out = np.zeros(frames, dtype=np.float64)
    for phrase in _phrases(_monophonic(notes, frames / sample_rate)):
        phrase = _fit_range(phrase, spec.low, spec.high)
        if spec.kind == "formant":
            audio = _formant_phrase(phrase, TIMBRES[singer], spec.language, rng, sample_rate)
        else:
            audio = _festival_phrase(phrase, FESTIVAL_VOICES[singer], spec.language, rng, sample_rate)
        start = round(phrase[0].start * sample_rate)
        audio = audio[: max(0, frames - start)]
        out[start : start + len(audio)] += audio
    peak = np.max(np.abs(out), initial=0.0)
    if peak > 0.0:
        out *= 0.9 / peak  # the mixer sets levels; a fixed peak keeps the stems comparable
    return out.astype(np.float32)


def _monophonic(notes: Sequence[Note], seconds: float) -> list[Note]:
    """The notes by start time, each cut at the next one's start and at `seconds`; empty notes dropped."""
    ordered = sorted((note for note in notes if note.start < seconds), key=lambda note: note.start)
    kept = []
    for index, note in enumerate(ordered):
        following = ordered[index + 1].start if index + 1 < len(ordered) else seconds
        end = min(note.start + note.duration, following, seconds)
        if end - note.start > 0.01:
            kept.append(Note(note.start, end - note.start, note.pitch, note.velocity))
    return kept


def _phrases(notes: list[Note]) -> list[list[Note]]:
    """`notes` split at every rest longer than PHRASE_GAP."""
    phrases: list[list[Note]] = []
    for note in notes:
        if phrases and note.start - (phrases[-1][-1].start + phrases[-1][-1].duration) <= PHRASE_GAP:
            phrases[-1].append(note)
        else:
            phrases.append([note])
    return phrases


def _fit_range(phrase: list[Note], low: int, high: int) -> list[Note]:
    """The phrase moved by the whole octaves that put most of it in `low`–`high` (the fewest octaves on a tie);
    notes still outside are then folded in one by one."""
    pitches = np.array([note.pitch for note in phrase])
    shifts = sorted(range(-4, 5), key=abs)
    best = max(shifts, key=lambda k: np.sum((pitches + 12 * k >= low) & (pitches + 12 * k <= high)))
    fitted = []
    for note in phrase:
        pitch = note.pitch + 12 * best
        while pitch > high:
            pitch -= 12
        while pitch < low:
            pitch += 12
        fitted.append(Note(note.start, note.duration, pitch, note.velocity))
    return fitted


def _hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def _gain(velocity: int) -> float:
    """A note's level: velocity spans 30 dB."""
    return 10.0 ** ((velocity - 127) / 127 * 30.0 / 20.0)


# ---------------------------------------------------------------------------------------------------------------------
# Formant singers


def _formant_phrase(
    phrase: list[Note], timbre: Timbre, language: str, rng: np.random.Generator, rate: int
) -> np.ndarray:
    """One phrase sung by a formant singer: (samples,) float64 from the phrase's first note start to its end."""
    origin = phrase[0].start
    length = round((phrase[-1].start + phrase[-1].duration - origin) * rate)
    f0 = _pitch_contour(phrase, timbre, rng, rate, length)
    glottal, open_phase = _glottal_source(f0, timbre, rate)
    glottal *= 1.0 + timbre.shimmer * _smooth_noise(rng, length, rate, 150.0)
    noise = rng.standard_normal(length)
    breath = signal.sosfilt(signal.butter(2, min(600.0, 0.4 * rate), "highpass", fs=rate, output="sos"), noise)
    # Breath noise is pulsed: louder while the glottis is open.
    excitation = glottal + timbre.breath * breath * (0.4 + 0.6 * open_phase) * np.std(glottal)
    out = np.zeros(length)
    for index, note in enumerate(phrase):
        onset = ONSETS[language][rng.integers(len(ONSETS[language]))]
        vowel = VOWELS[language][rng.integers(len(VOWELS[language]))]
        start = round((note.start - origin) * rate)
        end = min(length, start + round(note.duration * rate))
        previous_end = phrase[index - 1].start + phrase[index - 1].duration if index else -math.inf
        following = phrase[index + 1].start if index + 1 < len(phrase) else math.inf
        legato_in = note.start - previous_end < LEGATO_GAP
        legato_out = following - (note.start + note.duration) < LEGATO_GAP
        syllable = _syllable(
            excitation[start:end], noise[start:end], onset, vowel, float(np.median(f0[start:end])), timbre, rate
        )
        envelope = _envelope(
            end - start, rate, 0.015 if legato_in else timbre.attack, 0.015 if legato_out else timbre.release
        )
        out[start:end] += syllable * envelope * _gain(note.velocity)
    return out


def _pitch_contour(phrase: list[Note], timbre: Timbre, rng: np.random.Generator, rate: int, length: int) -> np.ndarray:
    """f0 in Hz per sample, shape (length,): the notes' pitches joined by glides, with scoops into notes after a
    rest, delayed vibrato, slow drift and jitter."""
    origin = phrase[0].start
    time = np.arange(length) / rate
    pitch = np.full(length, float(phrase[0].pitch))
    cents = np.zeros(length)
    previous_end = -math.inf
    for index, note in enumerate(phrase):
        start = round((note.start - origin) * rate)
        end = min(length, start + round(note.duration * rate))
        pitch[start:] = note.pitch
        local = time[start:end] - time[start]
        if index and note.start - previous_end < LEGATO_GAP:
            # a singer arrives at a legato note from the last one's pitch: a smooth glide that starts on the beat
            glide = min(timbre.glide, 0.3 * note.duration)
            pitch[start:end] += (phrase[index - 1].pitch - note.pitch) * (1.0 - _smoothstep(local / glide))
        else:
            scoop = timbre.scoop_cents * rng.uniform(0.3, 1.0)
            cents[start:end] -= scoop * (1.0 - _smoothstep(local / min(0.12, 0.3 * note.duration)))
        depth = timbre.vibrato_cents * rng.uniform(0.8, 1.2)
        rate_hz = rng.uniform(*timbre.vibrato_hz)
        fade_in = np.clip((local - timbre.vibrato_delay) / 0.3, 0.0, 1.0)
        cents[start:end] += depth * fade_in * np.sin(2 * np.pi * rate_hz * local + rng.uniform(0, 2 * np.pi))
        previous_end = note.start + note.duration
    cents += 8.0 * _smooth_noise(rng, length, rate, 3.0)  # intonation drift
    cents += timbre.jitter_cents * _smooth_noise(rng, length, rate, 200.0)
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0 + cents / 1200.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _smooth_noise(rng: np.random.Generator, length: int, rate: int, hz: float) -> np.ndarray:
    """Unit-variance random values `hz` times a second, linearly interpolated to (length,) samples."""
    knots = rng.standard_normal(int(length / rate * hz) + 2)
    return np.interp(np.arange(length) * (hz / rate), np.arange(len(knots)), knots)


def _glottal_source(f0: np.ndarray, timbre: Timbre, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The glottal flow derivative at f0 (Hz per sample, shape (n,)), read from band-limited wavetables so that no
    harmonic passes Nyquist; returns it and the open-phase indicator (n,) that pulses the breath noise."""
    tables = _glottal_tables(rate, timbre.open_quotient, timbre.tilt_db)
    phase = np.cumsum(f0 / rate) % 1.0
    choice = np.clip(np.ceil(TABLES_PER_OCTAVE * np.log2(f0 / TABLE_LOWEST_HZ)), 0, len(tables) - 1).astype(int)
    position = phase * TABLE_LENGTH
    left = position.astype(int) % TABLE_LENGTH
    fraction = position - np.floor(position)
    wave = tables[choice, left] * (1.0 - fraction) + tables[choice, (left + 1) % TABLE_LENGTH] * fraction
    return wave, (phase < timbre.open_quotient).astype(np.float64)


@functools.lru_cache(maxsize=64)
def _glottal_tables(rate: int, open_quotient: float, tilt_db: float) -> np.ndarray:
    """One period of a Rosenberg glottal flow derivative, as (tables, TABLE_LENGTH) wavetables: table j keeps the
    harmonics below Nyquist for f0 up to TABLE_LOWEST_HZ · 2^(j / TABLES_PER_OCTAVE), tilted by `tilt_db` per
    octave."""
    dense = 16 * TABLE_LENGTH
    t = np.arange(dense) / dense
    opening, closing = 0.65 * open_quotient, 0.35 * open_quotient
    flow = np.where(t < opening, 0.5 * (1 - np.cos(np.pi * t / opening)), 0.0)
    falling = (t >= opening) & (t < open_quotient)
    flow[falling] = np.cos(0.5 * np.pi * (t[falling] - opening) / closing)
    spectrum = np.fft.rfft(np.diff(flow, append=flow[:1]))
    harmonics = np.arange(len(spectrum))
    spectrum *= np.maximum(harmonics, 1) ** (tilt_db / (20 * np.log10(2)))
    spectrum[0] = 0.0
    count = int(TABLES_PER_OCTAVE * np.log2(0.5 * rate / TABLE_LOWEST_HZ)) + 1
    tables = np.empty((count, TABLE_LENGTH))
    for j in range(count):
        highest = min(TABLE_LENGTH // 2 - 1, int(0.47 * rate / (TABLE_LOWEST_HZ * 2 ** (j / TABLES_PER_OCTAVE))))
        kept = np.zeros(TABLE_LENGTH // 2 + 1, dtype=complex)
        kept[1 : highest + 1] = spectrum[1 : highest + 1]
        tables[j] = np.fft.irfft(kept, TABLE_LENGTH)
    return tables / np.max(np.abs(tables[0]))


def _syllable(
    excitation: np.ndarray,
    noise: np.ndarray,
    onset: str,
    vowel: str,
    f0: float,
    timbre: Timbre,
    rate: int,
) -> np.ndarray:
    """One note's syllable, shape like `excitation` (the note's span of the phrase's glottal excitation): the onset
    consonant, then the vowel's resonances to the end."""
    length = len(excitation)
    time = np.arange(length) / rate
    # consonants take at most a third of the note, so short notes keep their vowel
    budget = length / rate / 3.0
    voicing = np.ones(length)
    aspiration = np.zeros(length)
    frication = np.zeros(length)
    vowel_start = 0.0
    if onset in ("m", "n", "l", "r", "w", "y"):
        vowel_start = min(0.07, budget)
    elif onset == "h":
        vowel_start = min(0.06, budget)
        voicing = _ramp(time, vowel_start - 0.02, vowel_start)
        aspiration = 0.3 * (1.0 - voicing)
    elif onset in OBSTRUENTS:
        low, high, duration, voiced, plosive = OBSTRUENTS[onset]
        closure = min(0.04, budget / 3) if plosive else 0.0
        duration = min(duration, budget / 3)
        burst_end = closure + duration
        vowel_start = burst_end + (0.0 if voiced or not plosive else min(0.04, budget / 3))
        voicing = _ramp(time, vowel_start - 0.01, vowel_start + 0.01)
        if voiced:
            voicing = np.maximum(voicing, 0.15 * (time < vowel_start))  # the voice bar under the closure/noise
        if plosive and not voiced:
            aspiration = 0.25 * (time >= burst_end) * (1.0 - voicing)
        band = _band(noise, low, high, rate)
        level = 0.5 if plosive else 0.25
        frication = (
            level * band * _ramp(time, closure, closure + 0.003) * (1.0 - _ramp(time, burst_end - 0.005, burst_end))
        )
    source = voicing * excitation + aspiration * noise * np.std(excitation)
    vowel_sos = _vowel_filter(vowel, f0, timbre, rate)
    if onset in FORMANTS:
        sonorant_sos = _vowel_filter(onset, f0, timbre, rate)
        fade = _ramp(time, vowel_start - CROSSFADE, vowel_start + CROSSFADE)
        murmur = 0.5 if onset in ("m", "n") else 1.0
        voiced = murmur * (1.0 - fade) * signal.sosfilt(sonorant_sos, source) + fade * signal.sosfilt(vowel_sos, source)
    else:
        voiced = signal.sosfilt(vowel_sos, source)
    return voiced + frication * np.std(excitation)


def _ramp(time: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 before `start`, 1 after `end`, a raised-cosine between."""
    if end <= start:
        return (time >= start).astype(np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * np.clip((time - start) / (end - start), 0.0, 1.0))


def _band(noise: np.ndarray, low: float, high: float, rate: int) -> np.ndarray:
    """`noise` band-passed to `low`–`high` Hz (the top clipped below Nyquist)."""
    high = min(high, 0.45 * rate)
    low = min(low, 0.5 * high)
    return signal.sosfilt(signal.butter(2, (low, high), "bandpass", fs=rate, output="sos"), noise)


def _envelope(length: int, rate: int, attack: float, release: float) -> np.ndarray:
    """A note's amplitude envelope, shape (length,): raised-cosine attack and release inside the note."""
    time = np.arange(length) / rate
    span = length / rate
    attack, release = min(attack, 0.3 * span), min(release, 0.3 * span)
    return _ramp(time, 0.0, attack) * (1.0 - _ramp(time, span - release, span))


def _vowel_filter(phoneme: str, f0: float, timbre: Timbre, rate: int) -> np.ndarray:
    """Second-order sections (sections, 6) of `phoneme`'s vocal tract for this timbre, at a note of `f0` Hz."""
    frequencies = [f * timbre.formant_scale for f in FORMANTS[phoneme]]
    # Singers raise F1 to the pitch on high notes rather than let the fundamental go unsupported.
    frequencies[0] = max(frequencies[0], 1.1 * f0)
    widths = NASAL_BANDWIDTHS if phoneme in ("m", "n") else BANDWIDTHS
    sections = [
        _resonator(f, w * timbre.bandwidth_scale, rate)
        for f, w in zip(frequencies, widths, strict=True)
        if f < 0.45 * rate
    ]
    if timbre.ring_db and timbre.ring_hz < 0.45 * rate:
        sections.append(peaking_section(timbre.ring_hz, 4.0, timbre.ring_db, rate))
    if timbre.nasal:
        # nasal coupling: a low nasal formant and an antiresonance between F1 and F2
        sections.append(peaking_section(300.0, 2.0, 6.0 * timbre.nasal, rate))
        sections.append(peaking_section(1000.0 * timbre.formant_scale, 3.0, -12.0 * timbre.nasal, rate))
    return np.array(sections)


def _resonator(frequency: float, bandwidth: float, rate: int) -> list[float]:
    """A two-pole formant resonator with unity gain at DC (a cascade of them keeps the vowel's natural levels)."""
    radius = math.exp(-math.pi * bandwidth / rate)
    a1, a2 = -2 * radius * math.cos(2 * math.pi * frequency / rate), radius * radius
    return [1 + a1 + a2, 0.0, 0.0, 1.0, a1, a2]


# ---------------------------------------------------------------------------------------------------------------------
# Festival singers


@functools.cache
def _festival_voices() -> frozenset[str]:
    """The Festival voices installed here (empty when Festival is missing)."""
    if shutil.which("festival") is None:
        return frozenset()
    try:
        listed = subprocess.run(
            ["festival", "-b", "(print (voice.list))"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(listed.strip().strip("()").split())


def _festival_phrase(phrase: list[Note], voice: str, language: str, rng: np.random.Generator, rate: int) -> np.ndarray:
    """One phrase sung by the Festival `voice`: (samples,) float64 from the phrase's first note start to its end."""
    origin = phrase[0].start
    length = round((phrase[-1].start + phrase[-1].duration - origin) * rate)
    words = [WORDS[language][rng.integers(len(WORDS[language]))] for _ in phrase]
    audio, source_rate = _text2wave(phrase, words, voice)
    audio = audio.mean(axis=1)
    divisor = math.gcd(rate, source_rate)
    audio = signal.resample_poly(audio, rate // divisor, source_rate // divisor)[:length]
    audio = np.pad(audio, (0, length - len(audio)))
    # Festival's last phone may be cut at the phrase end: a short fade avoids the click.
    return audio * (1.0 - _ramp(np.arange(length) / rate, length / rate - 0.01, length / rate))


def _text2wave(phrase: list[Note], words: list[str], voice: str) -> tuple[np.ndarray, int]:
    """Festival's (samples, channels) rendering of `phrase` on `words`, and its sample rate.

    Festival's diphone code crashes (SIGSEGV) on some durations (czech_ph at 196 Hz on notes of 1.525–1.533 s, not
    on 1.52 or 1.535 s): a crashed phrase is sung again with its durations stretched by 1 %, then 2 %, either way.
    The phrase keeps its place and length; its later notes move by at most that share of their time into it.
    """
    why = ""
    for stretch in FESTIVAL_RETRY_STRETCHES:
        with tempfile.TemporaryDirectory(prefix="unmix-festival-") as folder:
            score, wave = Path(folder) / "phrase.xml", Path(folder) / "phrase.wav"
            score.write_text(_singing_xml(phrase, words, stretch), encoding="ascii")
            done = subprocess.run(
                ["text2wave", "-mode", "singing", "-eval", f"(voice_{voice})", str(score), "-o", str(wave)],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode == 0 and wave.is_file():
                audio, source_rate = sf.read(wave, dtype="float64", always_2d=True)
                return audio, source_rate
            # Festival reports some errors (an unknown voice) on stdout with exit status 0
            why = ((done.stderr + done.stdout).strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            if done.returncode >= 0:  # an error of its own, not a crash: singing it again changes nothing
                break
    raise RuntimeError(f"text2wave could not sing a phrase with Festival voice {voice}: {why}")


def _singing_xml(phrase: list[Note], words: list[str], stretch: float = 1.0) -> str:
    """Festival singing-mode markup for `phrase`: `words[i]` on note i, pitches as FREQ in Hz (Festival's note names
    put A4 an octave low) and durations in SECONDS, times `stretch`; short rests inside the phrase become REST
    elements."""
    lines = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" "Singing.v0_1.dtd" []>',
        '<SINGING BPM="60">',  # required by the DTD; SECONDS durations do not use it
    ]
    for note, following, word in zip(phrase, [*phrase[1:], None], words, strict=True):
        rest = following.start - (note.start + note.duration) if following else 0.0
        # rests too short to sing are held by the note before them, which keeps the notes on time
        duration = note.duration + (rest if rest < LEGATO_GAP else 0.0)
        lines.append(
            f'<PITCH FREQ="{_hz(note.pitch):.2f}"><DURATION SECONDS="{duration * stretch:.4f}">{word}</DURATION></PITCH>'
        )
        if rest >= LEGATO_GAP:
            lines.append(f'<REST SECONDS="{rest * stretch:.4f}"></REST>')
    lines.append("</SINGING>")
    return "\n".join(lines) + "\n"
