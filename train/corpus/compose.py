"""Composition rules of the synthetic corpus: a style (meters, tempi, modes, a groove for the drums, bass and
comping, melody lines and a song form) turns a random generator into a `Song` of timed notes. The styles are
chosen to cover what a separator meets in real music and a single generator's habits would leave out: compound
and odd meters, swing, one-drop and clave grooves, walking and oom-pah bass, 12-bar, AABA, rondo and
through-composed forms, key changes, and sections where any stem rests.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

import numpy as np

from .score import Instrument, Note, Part, Song

T = TypeVar("T")

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "major_pentatonic": (0, 2, 4, 7, 9),
    "minor_pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
# Chords are stacked in thirds of a seven-note scale: the gapped scales borrow their parent's.
HARMONY = {"major_pentatonic": "major", "minor_pentatonic": "minor", "blues": "mixolydian"}

# General MIDI percussion keys.
DRUM_KEYS = {"kick": 36, "rim": 37, "snare": 38, "clap": 39, "hat": 42, "pedal": 44, "crash": 49, "ride": 51}
DRUM_KEYS |= {"tambourine": 54, "cowbell": 56, "conga_mute": 62, "conga": 63, "timbale": 66, "cabasa": 69, "claves": 75}
SNARE, HAT, CRASH = DRUM_KEYS["snare"], DRUM_KEYS["hat"], DRUM_KEYS["crash"]
TOMS = (50, 48, 47, 45, 43, 41)  # high to low, for fills
VELOCITY = {"X": 118, "x": 96, "o": 74, "g": 42}  # drum pattern characters


@dataclass(frozen=True)
class Meter:
    """A bar's grid in sixteenths: `numerator` of the time signature (`Song.meter`), `steps` per bar, `beat`
    sixteenths per counted beat (a quarter; a dotted quarter in 6/8 and 12/8) and `pulses`, the sixteenths its
    beat groups start on (where chords change voice and strong melody notes fall)."""

    numerator: int
    steps: int
    beat: int
    pulses: tuple[int, ...]


METERS = {
    "2/4": Meter(2, 8, 4, (0, 4)),
    "3/4": Meter(3, 12, 4, (0, 4, 8)),
    "4/4": Meter(4, 16, 4, (0, 4, 8, 12)),
    "5/4": Meter(5, 20, 4, (0, 4, 8, 12, 16)),
    "6/8": Meter(6, 12, 6, (0, 6)),
    "7/8": Meter(7, 14, 4, (0, 4, 8)),  # 2+2+3 eighths
    "12/8": Meter(12, 24, 6, (0, 6, 12, 18)),
}


@dataclass(frozen=True)
class Groove:
    """How a style plays one bar: pattern strings of one character a sixteenth.

    drums, percussion: GM key → hits, "X" accent, "x" normal, "o" soft, "g" ghost, "." silent.
    bass: "r" root, "t" third, "f" fifth, "s" seventh, "o" octave, "a" a semitone off the next bar's root,
        "w" a walking note (root first, approach last, chord tones between), "-" held, "." rest.
    comp: "x" the whole chord, "a" the chord's next tone (an arpeggio), "-" held, "." rest.
    swing: sixteenths each off-beat eighth is late; rolls: hi-hat rolls (32nds, triplets) drawn into bars.
    """

    meter: str
    drums: dict[int, str]
    bass: str
    comp: str
    percussion: dict[int, str]
    swing: float = 0.0
    rolls: bool = False


def groove(meter: str, table: str, swing: float = 0.0, rolls: bool = False) -> Groove:
    """A groove written as a table, a row a pattern: "bass", "comp", kit pieces by their `DRUM_KEYS` name and,
    with a "+" before the name, the percussion part's pieces. Spaces inside a pattern are for reading."""
    rows = {name: "".join(cells) for name, *cells in (row.split() for row in table.strip().splitlines())}
    drums = {DRUM_KEYS[name]: hits for name, hits in rows.items() if name in DRUM_KEYS}
    percussion = {DRUM_KEYS[name[1:]]: hits for name, hits in rows.items() if name.startswith("+")}
    return Groove(meter, drums, rows["bass"], rows["comp"], percussion, swing, rolls)


@dataclass(frozen=True)
class Section:
    """A stretch of the form: `bars` long, playing the parts in `roles`; sections of one `theme` share their
    chords and melody; `shift` transposes it (semitones, a key change)."""

    name: str
    bars: int
    roles: frozenset[str]
    theme: str
    shift: int = 0


class Programs(NamedTuple):
    """The GM kits (bank 128 presets) and programs a style's parts draw from."""

    kit: tuple[int, ...]
    bass: tuple[int, ...]
    comp: tuple[int, ...]
    pad: tuple[int, ...]
    lead: tuple[int, ...]


FormRule = Callable[[np.random.Generator, int, int], list[Section]]


@dataclass(frozen=True)
class Style:
    """The rules of one style: its grooves (each with its meter), tempo range (BPM of the counted beat), modes,
    chord progressions (scale degrees, a bar each), `chords` ("triad", "seventh" or "dominant": every chord a
    dominant seventh, as in the blues), `form` (bars, phrase bars → sections), the melody `lines` the singer
    uses (`LINES`) and the GM programs (kits for the drums) each part draws from."""

    grooves: tuple[Groove, ...]
    tempo: tuple[float, float]
    modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]
    form: FormRule
    lines: tuple[str, ...]
    programs: Programs
    chords: str = "triad"


@dataclass(frozen=True)
class Line:
    """A kind of melody: note `lengths` (sixteenths) with their `odds`; `leap` jumps between chord tones instead
    of stepping; `cell` bars form a cell repeated through the phrase, moved by `sequence` scale steps on each
    repeat; `melisma`, the chance a long note breaks into a run; `offset`, sixteenths the phrase starts late;
    `pentatonic` keeps to the key's major or minor pentatonic (a hook)."""

    lengths: tuple[int, ...]
    odds: tuple[float, ...]
    leap: bool = False
    cell: int = 0
    sequence: tuple[int, ...] = (0,)
    melisma: float = 0.0
    offset: int = 0
    pentatonic: bool = False


LINES = {
    "steps": Line((2, 4, 6, 8), (0.35, 0.35, 0.15, 0.15), melisma=0.1),
    "leaps": Line((4, 2, 8, 6), (0.45, 0.2, 0.2, 0.15), leap=True),
    "held": Line((8, 12, 16, 4), (0.3, 0.25, 0.25, 0.2), melisma=0.4),
    "syncopated": Line((3, 2, 4, 6), (0.4, 0.25, 0.2, 0.15), melisma=0.1, offset=2),
    "hook": Line((2, 3, 3, 4), (0.3, 0.3, 0.2, 0.2), cell=1, pentatonic=True),
    "motif": Line((2, 4, 2, 6), (0.3, 0.3, 0.2, 0.2), cell=2, sequence=(0, 1, 0, -1), melisma=0.05),
}

# Which roles sound in which stem; "call" halves the singer's phrases, an instrument answering.
STEM_ROLES = {
    "drums": {"drums", "percussion"},
    "bass": {"bass"},
    "other": {"comp", "pad", "lead"},
    "vocals": {"vocals", "backing"},
}
DRUMS = frozenset({"drums", "percussion"})
BAND = DRUMS | {"bass", "comp"}
SUNG = BAND | {"vocals"}
CHORUS = SUNG | {"pad", "backing"}
SOLO = BAND | {"pad", "lead"}
CALL = SUNG | {"lead", "call"}


def _length(sections: Sequence[Section]) -> int:
    return sum(s.bars for s in sections)


def _intro(bars: int, phrase: int, roles: frozenset[str]) -> list[Section]:
    """A phrase-long intro, if the song is long enough to spare one."""
    return [Section("intro", phrase, roles, "I")] if bars >= 4 * phrase else []


def verse_chorus(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """Bass-only intro, verses and choruses, a drums-only breakdown, last choruses a semitone or a tone up."""
    n, shift = 2 * phrase, int(rng.choice((1, 2)))
    out = _intro(bars, phrase, frozenset({"bass"}))
    while _length(out) < 0.6 * bars:
        out += [Section("verse", n, SUNG, "A"), Section("chorus", n, CHORUS, "B")]
    if bars >= 6 * n:
        out.append(Section("breakdown", phrase, DRUMS, "D"))
    while _length(out) < bars:
        out.append(Section("chorus", n, CHORUS, "B", shift))
    return out


def aaba(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """32-bar AABA choruses: the head sung, then choruses an instrument solos over, then the head again."""
    n = 2 * phrase

    def chorus(a: frozenset[str], b: frozenset[str], name: str) -> list[Section]:
        return [Section(name, n, a, "A"), Section(name, n, a, "A"), Section("bridge", n, b, "B")] + [
            Section(name, n, a, "A")
        ]

    out = _intro(bars, phrase, frozenset({"bass", "comp"})) + chorus(SUNG, CHORUS, "head")
    while _length(out) < bars - 4 * n:
        out += chorus(SOLO, SOLO, "solo")
    return out + chorus(SUNG, CHORUS, "head")


def twelve_bar(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """12-bar blues choruses: sung, sung with an instrument answering each line, then a solo chorus."""
    out = [Section("intro", 4, SOLO, "I")] if bars >= 24 else []
    cycle = [Section("chorus", 12, SUNG, "A"), Section("chorus", 12, CALL, "A"), Section("solo", 12, SOLO, "S")]
    while _length(out) < bars:
        out += cycle
    return out


def through_composed(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """A-B-C-…: every section new material, the texture growing from bass, comping and voice to the full band."""
    textures = (SUNG - DRUMS, SUNG, SOLO, CHORUS, CALL)
    out: list[Section] = []
    while _length(out) < bars:
        letter = chr(ord("A") + len(out) % 26)
        out.append(Section(letter, phrase * int(rng.integers(1, 4)), textures[len(out) % len(textures)], letter))
    return out


def call_response(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """A vamp: drums-and-bass intro, verses where an instrument answers the singer, sung refrains, a solo."""
    n = 2 * phrase
    out = _intro(bars, phrase, DRUMS | {"bass"})
    cycle = [Section("verse", n, CALL, "A"), Section("refrain", n, CHORUS, "B")]
    cycle += [Section("verse", n, CALL, "A"), Section("solo", phrase, SOLO, "C")]
    while _length(out) < bars:
        out += cycle
    return out


def rondo(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """ABACA…: a sung refrain between episodes, one instrumental, one without drums."""
    n = 2 * phrase
    refrain = Section("A", n, CHORUS, "A")
    episodes = [Section("B", n, SOLO, "B"), Section("C", n, frozenset({"bass", "pad", "vocals"}), "C")]
    out: list[Section] = []
    while _length(out) < bars:
        out += [refrain, episodes[len(out) // 2 % 2]]
    return out


def build_drop(rng: np.random.Generator, bars: int, phrase: int) -> list[Section]:
    """Electronic: an intro of drums and pad, drops with everything, breakdowns without drums."""
    n = 2 * phrase
    out = _intro(bars, phrase, DRUMS | {"pad"})
    cycle = [
        Section("drop", n, SUNG | {"pad", "lead"}, "A"),
        Section("breakdown", phrase, frozenset({"pad", "vocals"}), "B"),
    ]
    while _length(out) < bars:
        out += cycle
    return out


def _fit(sections: list[Section], bars: int) -> list[Section]:
    """The plan cut at `bars`, with sparse sections filled in until every stem plays in at least half the bars
    (a short song keeps its tutti, not its intro)."""
    out: list[Section] = []
    for section in sections:
        if _length(out) < bars:
            out.append(replace(section, bars=min(section.bars, bars - _length(out))))
    for stem in STEM_ROLES:
        while sum(s.bars * _presence(s, stem) for s in out) < 0.5 * bars:
            i = next(i for i, s in enumerate(out) if _presence(s, stem) < 1)
            out[i] = replace(out[i], roles=(out[i].roles | SUNG) - {"call"})
    return out


def _presence(section: Section, stem: str) -> float:
    """How much of the section `stem` plays in: a singer answered by an instrument sings half of it."""
    if not section.roles & STEM_ROLES[stem]:
        return 0.0
    return 0.5 if stem == "vocals" and "call" in section.roles else 1.0


class Event(NamedTuple):
    """A note on the grid: `step` and `length` in sixteenths from the song's start."""

    step: float
    length: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Arrangement:
    """What every part is written from: the style, its groove and meter, the tempo and the seconds a sixteenth
    lasts, the key and mode, the fitted sections, each bar's chord (pitch classes, root first), the bars of a
    phrase and a seed per theme."""

    style: Style
    groove: Groove
    meter: Meter
    tempo: float
    step_s: float
    key: int
    mode: str
    sections: list[Section]
    chords: list[tuple[int, ...]]
    phrase: int
    seeds: dict[str, int]

    def time(self, step: float) -> float:
        """Seconds of a sixteenth `step`, off-beat eighths late by the groove's swing."""
        return (step + (self.groove.swing if step % self.meter.steps % 4 == 2 else 0.0)) * self.step_s

    def spans(self, role: str) -> Iterator[tuple[Section, range]]:
        """The sections playing `role` with their bars."""
        first = 0
        for section in self.sections:
            if role in section.roles:
                yield section, range(first, first + section.bars)
            first += section.bars

    def phrases(self, bars: range) -> Iterator[tuple[int, int]]:
        """First and end sixteenth of each phrase of these bars."""
        for bar in range(bars.start, bars.stop, self.phrase):
            yield bar * self.meter.steps, min(bar + self.phrase, bars.stop) * self.meter.steps

    def chord_at(self, step: float) -> tuple[int, ...]:
        return self.chords[min(int(step // self.meter.steps), len(self.chords) - 1)]

    def theme_rng(self, section: Section, part: str) -> np.random.Generator:
        """A generator per theme and part, so a repeated section repeats its material."""
        return np.random.default_rng([self.seeds[section.theme], int.from_bytes(part.encode(), "little")])

    def rest(self, seconds: float) -> int:
        """Sixteenths lasting at least `seconds`, even where swing delays the note that ends them."""
        return max(1, math.ceil(seconds / self.step_s + self.groove.swing))


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _hits(pattern: str) -> list[tuple[int, str, int]]:
    """(sixteenth, character, length in sixteenths) of each sounding character of a pattern string."""
    cells = pattern.replace(" ", "")
    out = []
    for i, c in enumerate(cells):
        if c not in ".-":
            n = 1
            while i + n < len(cells) and cells[i + n] == "-":
                n += 1
            out.append((i, c, n))
    return out


def _chord(key: int, mode: str, degree: int, kind: str) -> tuple[int, ...]:
    """Pitch classes of the chord on scale `degree`, root first."""
    scale = MODES[HARMONY.get(mode, mode)]
    if kind == "dominant":
        return tuple((key + scale[degree % 7] + i) % 12 for i in (0, 4, 7, 10))
    return tuple((key + scale[(degree + 2 * i) % 7]) % 12 for i in range(4 if kind == "seventh" else 3))


def _near(pc: int, target: float) -> int:
    """The pitch of pitch class `pc` nearest `target`."""
    return round((target - pc) / 12) * 12 + pc


def _voicing(chord: tuple[int, ...], centre: float) -> list[int]:
    """A close voicing within a tritone of `centre`: consecutive chords move little."""
    return sorted(_near(pc, centre) for pc in chord)


def _scale(key: int, mode: str, low: int, high: int, pentatonic: bool = False) -> list[int]:
    """The mode's pitches in [low, high] (its pentatonic subset if asked; any pitch if none falls there)."""
    pcs = {(key + i) % 12 for i in MODES[mode]}
    if pentatonic:
        pcs &= {(key + i) % 12 for i in ((0, 2, 4, 7, 9) if (key + 4) % 12 in pcs else (0, 3, 5, 7, 10))}
    return [p for p in range(low, high + 1) if p % 12 in pcs] or list(range(low, high + 1))


def _snap(idx: int, pitches: list[int], chord: tuple[int, ...]) -> int:
    """The index of the chord tone nearest `idx`, or `idx` if none is in reach."""
    for d in range(6):
        for i in (idx - d, idx + d):
            if 0 <= i < len(pitches) and pitches[i] % 12 in chord:
                return i
    return idx


def _rhythm(rng: np.random.Generator, line: Line, length: int, shortest: int) -> list[tuple[int, int]]:
    """Onsets and lengths (sixteenths) filling `length`; a long note may break into a melisma, the last is held."""
    odds = np.asarray(line.odds) / sum(line.odds)
    out, t = [], 0
    while t < length:
        n = max(int(rng.choice(line.lengths, p=odds)), shortest)
        if n >= 3 * shortest and rng.random() < line.melisma:
            for _ in range(int(rng.integers(2, 4))):
                out.append((t, shortest))
                t, n = t + shortest, n - shortest
        out.append((t, n))
        t += n
    out = [(o, n) for o, n in out if o + shortest <= length]
    return out[:-1] + [(out[-1][0], length - out[-1][0])] if out else []


def _contour(
    rng: np.random.Generator, line: Line, onsets: list[int], pitches: list[int], arr: Arrangement
) -> list[int]:
    """Indices into `pitches`: a walk by steps (or leaps between chord tones), chord tones on the pulses."""
    idx = _snap(len(pitches) // 2 + int(rng.integers(-2, 3)), pitches, arr.chord_at(onsets[0]))
    out = []
    for k, step in enumerate(onsets):
        chord = arr.chord_at(step)
        tones = [i for i in range(max(0, idx - 6), min(len(pitches), idx + 7)) if pitches[i] % 12 in chord]
        if k and line.leap and len(tones) > 1:
            idx = _pick(rng, [i for i in tones if i != idx])
        elif k:
            move = int(rng.choice((-2, -1, 0, 1, 2), p=(0.1, 0.35, 0.1, 0.35, 0.1)))
            idx = min(max(idx + (move if 0 <= idx + move < len(pitches) else -move), 0), len(pitches) - 1)
        if step % arr.meter.steps in arr.meter.pulses:
            idx = _snap(idx, pitches, chord)
        out.append(idx)
    return out


def _melody(
    rng: np.random.Generator, line: Line, start: int, end: int, pitches: list[int], arr: Arrangement, shortest: int
) -> list[Event]:
    """A phrase of `line` in `pitches` from sixteenth `start` to `end`, landing on a held chord tone."""
    start = start + line.offset if end - start > 4 * line.offset + 4 * shortest else start
    span = end - start
    if span < 2 * shortest:
        return []
    size = min(line.cell * arr.meter.steps or span, span)
    rhythm = _rhythm(rng, line, size, shortest)
    idxs = _contour(rng, line, [start + o for o, _ in rhythm], pitches, arr)
    notes = []
    for rep, at in enumerate(range(0, span, size)):
        move = line.sequence[rep % len(line.sequence)]
        for (o, n), i in zip(rhythm, idxs, strict=True):
            if at + o + shortest <= span:
                pitch = pitches[min(max(i + move, 0), len(pitches) - 1)]
                notes.append(Event(start + at + o, min(n, span - at - o), pitch, 84 if o % 4 == 0 else 72))
    last = notes[-1]
    landing = pitches[_snap(pitches.index(last.pitch), pitches, arr.chord_at(last.step))]
    return notes[:-1] + [last._replace(length=end - last.step, pitch=landing)]


def _kit(rng: np.random.Generator, arr: Arrangement) -> list[Event]:
    """The groove's kit pattern, a crash opening each section, tom fills closing some, trap hi-hat rolls."""
    out: list[Event] = []
    for _, bars in arr.spans("drums"):
        for bar in bars:
            at = bar * arr.meter.steps
            hits = _pattern(arr.groove.drums, at)
            if bar == bars.start and bar:
                hits.append(Event(at, 1, CRASH, 108))
            if bar == bars.stop - 1 and len(bars) > 1 and rng.random() < 0.6:
                hits = [h for h in hits if h.step < at + arr.meter.pulses[-1]] + _fill(arr.meter, at)
            elif arr.groove.rolls and rng.random() < 0.6:
                hits = _roll(rng, hits, arr.meter, at)
            out += hits
    return _ring(out, arr.rest(0.5))


def _pattern(patterns: Mapping[int, str], at: int) -> list[Event]:
    return [Event(at + s, 1, key, VELOCITY[c]) for key, p in patterns.items() for s, c, _ in _hits(p)]


def _fill(meter: Meter, at: int) -> list[Event]:
    """A snare and tom run down through the bar's last beat, getting louder."""
    first = meter.pulses[-1]
    n = meter.steps - first
    return [Event(at + first + i, 1, TOMS[i * len(TOMS) // n] if i else SNARE, 80 + 35 * i // n) for i in range(n)]


def _roll(rng: np.random.Generator, hits: list[Event], meter: Meter, at: int) -> list[Event]:
    """One beat's hi-hat turned into a roll of 32nds or triplets, rising in velocity."""
    first = at + _pick(rng, meter.pulses)
    width = meter.beat if first - at < meter.pulses[-1] else at + meter.steps - first
    every = _pick(rng, (0.5, 2 / 3, 1 / 3))
    count = round(width / every)
    roll = [Event(first + k * every, every, HAT, 55 + 50 * k // count) for k in range(count)]
    return [h for h in hits if not (h.pitch == HAT and first <= h.step < first + width)] + roll


def _ring(hits: list[Event], longest: int) -> list[Event]:
    """Drum hits ringing until the part's next hit, at most `longest` sixteenths."""
    onsets = sorted({h.step for h in hits})
    out = []
    for h in hits:
        i = bisect_left(onsets, h.step) + 1
        out.append(h._replace(length=min(onsets[i] - h.step if i < len(onsets) else longest, longest)))
    return out


def _percussion(arr: Arrangement) -> list[Event]:
    hits = [
        h
        for _, bars in arr.spans("percussion")
        for bar in bars
        for h in _pattern(arr.groove.percussion, bar * arr.meter.steps)
    ]
    return _ring(hits, arr.rest(0.5))


def _bass(rng: np.random.Generator, arr: Arrangement) -> list[Event]:
    """The groove's bass pattern on each bar's chord; walking notes lead to the next bar's root."""
    hits = _hits(arr.groove.bass)
    walk = [s for s, c, _ in hits if c == "w"]
    out = []
    for _, bars in arr.spans("bass"):
        for bar in bars:
            chord, following = arr.chords[bar], arr.chords[min(bar + 1, len(arr.chords) - 1)]
            root = _near(chord[0], 40)
            for s, c, n in hits:
                if c == "w":
                    c = "r" if s == walk[0] else "a" if s == walk[-1] else _pick(rng, "tfos")
                tone = {"r": 0, "t": 1, "f": 2, "s": 3, "o": 0}.get(c, 0)
                pitch = root + (chord[tone % len(chord)] - chord[0]) % 12 + 12 * (c == "o")
                if c == "s" and len(chord) < 4:
                    pitch = root + 10
                if c == "a":
                    pitch = _near(following[0], 40) + _pick(rng, (-1, 1))
                out.append(Event(bar * arr.meter.steps + s, n, pitch, 96 if s in arr.meter.pulses else 84))
    return out


def _comp(arr: Arrangement) -> list[Event]:
    """The groove's comping rhythm: whole chords, or arpeggios through the chord's tones."""
    out = []
    for _, bars in arr.spans("comp"):
        for bar in bars:
            voicing = _voicing(arr.chords[bar], 62)
            for k, (s, c, n) in enumerate(_hits(arr.groove.comp)):
                at = bar * arr.meter.steps + s
                chord = voicing if c == "x" else [voicing[k % len(voicing)]]
                out += [Event(at, n, p, 74 if s in arr.meter.pulses else 64) for p in chord]
    return out


def _pad(arr: Arrangement) -> list[Event]:
    """Each bar's chord held through the bar, above the comping."""
    steps = arr.meter.steps
    return [
        Event(bar * steps, steps, p, 52)
        for _, bars in arr.spans("pad")
        for bar in bars
        for p in _voicing(arr.chords[bar], 69)
    ]


def _lead(arr: Arrangement) -> list[Event]:
    """The instrument's line: it answers the singer in call sections, plays a held counter-melody under the
    singer elsewhere and solos where no one sings."""
    out = []
    for section, bars in arr.spans("lead"):
        rng = arr.theme_rng(section, "lead")
        pitches = _scale(arr.key + section.shift, arr.mode, 58, 84)
        for start, end in arr.phrases(bars):
            if "call" in section.roles:
                out += _melody(rng, LINES["syncopated"], (start + end) // 2, end - arr.rest(0.15), pitches, arr, 1)
            elif "vocals" in section.roles:
                out += _melody(rng, LINES["held"], start, end - arr.rest(0.15), pitches[len(pitches) // 3 :], arr, 2)
            else:
                out += _melody(rng, LINES[_pick(rng, arr.style.lines)], start, end - arr.rest(0.15), pitches, arr, 1)
    return out


def _vocal(arr: Arrangement, low: int, high: int) -> list[Event]:
    """The lead vocal: per section one of the style's lines, phrase by phrase, a breath (≥ 0.3 s) after each; in
    call sections only the first half of each phrase."""
    out = []
    shortest = arr.rest(0.1)
    for section, bars in arr.spans("vocals"):
        rng = arr.theme_rng(section, "vocals")
        line = LINES[_pick(rng, arr.style.lines)]
        pitches = _scale(arr.key + section.shift, arr.mode, low, high, line.pentatonic)
        for start, end in arr.phrases(bars):
            stop = (start + end) // 2 if "call" in section.roles else end
            out += _melody(rng, line, start, stop - arr.rest(0.3), pitches, arr, shortest)
    return out


def _backing(arr: Arrangement, lead: list[Event], low: int, high: int, harmony: bool) -> list[Event]:
    """Backing vocals where the form asks: the lead line two scale steps down (`harmony`), or "ooh"s on each
    bar's chord, moving to the nearest chord tone."""
    out = []
    steps = arr.meter.steps
    for section, bars in arr.spans("backing"):
        scale = _scale(arr.key + section.shift, arr.mode, 0, 127)
        if harmony:
            for e in lead:
                if bars.start * steps <= e.step < bars.stop * steps and bisect_left(scale, e.pitch) >= 2:
                    pitch = low + (scale[bisect_left(scale, e.pitch) - 2] - low) % 12  # into the range by octaves
                    if pitch <= high:
                        out.append(e._replace(pitch=pitch, velocity=e.velocity - 12))
            continue
        pitch = (low + high) // 2
        for bar in bars:
            tones = [p for p in range(low, high + 1) if p % 12 in arr.chords[bar]]
            if tones and steps > arr.rest(0.3):
                pitch = min(tones, key=lambda p: abs(p - pitch))
                out.append(Event(bar * steps, steps - arr.rest(0.3), pitch, 60))
    return out


def _notes(
    rng: np.random.Generator, events: list[Event], arr: Arrangement, seconds: float, jitter: float
) -> list[Note]:
    """Events timed in seconds with humanised onsets and velocities, cut at `seconds`."""
    notes = []
    for e in sorted(events):
        start = max(arr.time(e.step) + float(np.clip(rng.normal(0, jitter), -2 * jitter, 2 * jitter)), 0.0)
        end = min(arr.time(e.step + e.length), seconds)
        velocity = int(np.clip(round(e.velocity + rng.normal(0, 6)), 1, 127))
        if end - start > 0.02:
            notes.append(Note(round(start, 4), round(end - start, 4), e.pitch, velocity))
    return notes


def _monophonic(notes: list[Note], shortest: float) -> list[Note]:
    """Each note ended before the next starts; notes shorter than `shortest` dropped."""
    out = []
    for i, note in enumerate(notes):
        end = note.start + note.duration
        if i + 1 < len(notes):
            end = min(end, notes[i + 1].start - 0.02)
        if end - note.start >= shortest:
            out.append(replace(note, duration=round(end - note.start, 4)))
    return out


# name: stem, timing jitter (s), pan (distance from the centre, give or take), one note at a time.
PARTS = {
    "kit": ("drums", 0.004, (0.0, 0.1), False),
    "percussion": ("drums", 0.006, (0.5, 0.3), False),
    "bass": ("bass", 0.005, (0.0, 0.05), True),
    "comp": ("other", 0.008, (0.4, 0.3), False),
    "pad": ("other", 0.0, (0.4, 0.4), False),
    "lead": ("other", 0.008, (0.25, 0.2), True),
    "lead vocal": ("vocals", 0.006, (0.0, 0.05), True),
    "backing vocal": ("vocals", 0.008, (0.5, 0.3), True),
}


def _arrange(rng: np.random.Generator, seconds: float, style: Style) -> Arrangement:
    """Draw the groove, tempo, key and mode, plan the form over the song's bars and give each bar its chord."""
    groove = _pick(rng, style.grooves)
    meter = METERS[groove.meter]
    tempo = round(float(rng.uniform(*style.tempo)), 1)
    step_s = 60.0 / tempo / meter.beat
    key, mode = int(rng.integers(12)), _pick(rng, style.modes)
    bars = max(1, math.ceil(seconds / (step_s * meter.steps) - 1e-9))
    phrase = 4 if step_s * meter.steps < 2.6 else 2  # phrases of 4–10 s between breaths
    sections = _fit(style.form(rng, bars, phrase), bars)
    themes = sorted({s.theme for s in sections})
    seeds = {t: int(rng.integers(2**31)) for t in themes}
    progressions = {t: _pick(rng, style.progressions) for t in themes}
    chords = [
        _chord(key + s.shift, mode, progressions[s.theme][i % len(progressions[s.theme])], style.chords)
        for s in sections
        for i in range(s.bars)
    ]
    return Arrangement(style, groove, meter, tempo, step_s, key, mode, sections, chords, phrase, seeds)


def _instruments(rng: np.random.Generator, style: Style, lead: str, backing: str) -> dict[str, Instrument]:
    """Each part's instrument: the style's kit and programs drawn, the singers cast."""
    kit = Instrument("kit", program=_pick(rng, style.programs.kit))
    programs = {
        name: Instrument("program", program=_pick(rng, getattr(style.programs, name)))
        for name in ("bass", "comp", "pad", "lead")
    }
    return {
        "kit": kit,
        "percussion": kit,
        **programs,
        "lead vocal": Instrument("singer", voice=lead),
        "backing vocal": Instrument("singer", voice=backing),
    }


def compose(rng: np.random.Generator, seconds: float, style: str, singers: Mapping[str, tuple[int, int]]) -> Song:
    """Compose a song by the rules of one style.

    Args:
        rng: the only source of randomness: the same state gives the same song.
        seconds: the song's length; every note ends by then and the form covers [0, seconds].
        style: a name in `STYLES`.
        singers: the singers the vocals may use, each with its comfortable MIDI range (low, high); the lead vocal
            is one of them, a backing vocal another where there are several.

    Returns:
        The song: drums (a kit, maybe a percussion part), bass, other (comping, pad, lead instrument) and vocals,
        each stem sounding in at least half the bars. `Song.meter` is the time signature's numerator (6 in 6/8)
        and `Song.tempo` counts the beat in `Meter.beat` (a dotted quarter in 6/8 and 12/8).
    """
    if not singers:
        raise ValueError("compose needs at least one singer")
    rules = STYLES[style]
    arr = _arrange(rng, seconds, rules)
    names = sorted(singers)
    lead = _pick(rng, names)
    backing = _pick(rng, [n for n in names if n != lead] or names)
    vocal = _vocal(arr, *singers[lead])
    events = {
        "kit": _kit(rng, arr),
        "percussion": _percussion(arr),
        "bass": _bass(rng, arr),
        "comp": _comp(arr),
        "pad": _pad(arr),
        "lead": _lead(arr),
        "lead vocal": vocal,
        "backing vocal": _backing(arr, vocal, *singers[backing], harmony=bool(rng.random() < 0.5)),
    }
    instruments = _instruments(rng, rules, lead, backing)
    parts = []
    for name, (stem, jitter, (pan, spread), mono) in PARTS.items():
        notes = _notes(rng, events[name], arr, seconds, jitter)
        notes = _monophonic(notes, 0.08 if stem == "vocals" else 0.03) if mono else notes
        side = _pick(rng, (-1.0, 1.0))
        place = float(np.clip(side * (pan + rng.uniform(-spread, spread)), -1, 1))
        if notes:
            parts.append(
                Part(stem, name, instruments[name], notes, round(place, 3), round(float(rng.uniform(-3, 3)), 2))
            )
    bar_s = arr.step_s * arr.meter.steps
    edges = [float(b * bar_s) for b in np.cumsum([0] + [s.bars for s in arr.sections])[:-1]] + [seconds]
    form = [(s.name, edges[i], edges[i + 1]) for i, s in enumerate(arr.sections)]
    return Song(seconds, arr.tempo, arr.meter.numerator, arr.key, arr.mode, style, form, parts)


# The styles' tables, drum tabs and arguments aligned for reading.
# fmt: off
STYLES: dict[str, Style] = {
    "waltz": Style(
        (groove("3/4", """
            kick   x... .... ....
            ride   x... x.x. x...
            pedal  .... x... x...
            bass   r--- ---. f--.
            comp   .... x--. x--.
        """),),
        (90, 150), ("major", "harmonic_minor", "lydian"), ((0, 3, 4, 0), (0, 5, 1, 4), (0, 0, 3, 4, 0, 5, 1, 4)),
        rondo, ("leaps", "held", "steps"),
        Programs(kit=(32, 40, 0), bass=(32, 33, 43), comp=(0, 21, 24), pad=(48, 49), lead=(73, 40, 71, 11)),
    ),
    "ballad": Style(
        (groove("4/4", """
            kick   x... .... ..x. ....
            rim    .... x... .... x...
            hat    o.o. o.o. o.o. o.o.
            bass   r--- ---- r--- f---
            comp   a-a- a-a- a-a- a-a-
        """),),
        (60, 75), ("major", "lydian", "minor"), ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4)),
        verse_chorus, ("held", "steps", "leaps"),
        Programs(kit=(0, 8, 40), bass=(35, 33), comp=(0, 1, 4), pad=(48, 49, 50, 89), lead=(40, 65, 26, 73)),
    ),
    "blues_shuffle": Style(
        (groove("12/8", """
            kick   x..... ...... x..... ......
            snare  ...... x..... ...... x.....
            ride   x...x. x...x. x...x. x...x.
            bass   r---t- f---o- s---o- f---t-
            comp   x---x- x---x- x---x- x---x-
        """),),
        (70, 110), ("blues", "mixolydian", "minor_pentatonic"),
        ((0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4), (0, 3, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4)),
        twelve_bar, ("syncopated", "hook", "held"),
        Programs(kit=(0, 8, 32), bass=(32, 33, 34), comp=(0, 27, 16), pad=(16, 17), lead=(22, 27, 29, 65)),
        chords="dominant",
    ),
    "doo_wop": Style(
        (groove("12/8", """
            kick   x..... ...... x..... ......
            snare  ...... x..... ...... x.....
            hat    o.o.o. o.o.o. o.o.o. o.o.o.
            bass   r----- t----- f----- t-----
            comp   x-x-x- x-x-x- x-x-x- x-x-x-
        """),),
        (60, 80), ("major",), ((0, 5, 3, 4), (0, 5, 1, 4)),
        aaba, ("held", "leaps", "steps"),
        Programs(kit=(0, 8), bass=(32, 33), comp=(0, 1), pad=(48, 61), lead=(65, 66)),
    ),
    "reggae": Style(  # one drop: kick and rim shot together on three, the guitar's skank on two and four
        (groove("4/4", """
            kick   .... .... x... ....
            rim    .... .... x... ....
            hat    x.o. x.o. x.o. x.o.
            bass   r--- .f.. t-.f --r.
            comp   .... x--- .... x---
        """, swing=0.5),),
        (66, 84), ("minor", "dorian", "major"), ((0, 3), (0, 6), (0, 3, 4, 3), (0, 5, 3, 4)),
        verse_chorus, ("syncopated", "steps", "hook"),
        Programs(kit=(0, 8), bass=(33, 32, 38), comp=(27, 28, 4), pad=(16, 17), lead=(56, 65, 80)),
    ),
    "ska": Style(  # upstrokes on every off-beat over a walking bass
        (groove("4/4", """
            kick   x... .... x... ....
            snare  .... x... .... x...
            hat    ..x. ..x. ..x. ..x.
            bass   w--. w--. w--. w--.
            comp   ..x- ..x- ..x- ..x-
        """),),
        (130, 170), ("major", "mixolydian", "minor"), ((0, 3, 4, 3), (0, 5, 3, 4), (0, 4, 5, 3)),
        call_response, ("syncopated", "hook", "motif"),
        Programs(kit=(0, 16), bass=(33, 32), comp=(27, 28, 16), pad=(61, 16), lead=(56, 57, 65, 66)),
    ),
    "bossa_nova": Style(
        (groove("4/4", """
            kick   x..x x..x x..x x..x
            rim    x..x ..x. ..x. .x..
            hat    g.g. g.g. g.g. g.g.
            bass   r--- --.f f--- --..
            comp   x-.x -.x- .x-. x-..
        """),),
        (120, 145), ("major", "dorian", "lydian"), ((1, 4, 0, 0), (0, 5, 1, 4), (0, 0, 1, 4)),
        aaba, ("steps", "held", "syncopated"),
        Programs(kit=(40, 32), bass=(32, 43), comp=(24, 0), pad=(48, 89), lead=(73, 65, 11)),
        chords="seventh",
    ),
    "salsa": Style(  # 3-2 son clave, tumbao bass anticipating the bar, piano montuno
        (groove("4/4", """
            kick        ...x .... ...x ....
            timbale     .... .... .... ..xx
            +claves     x..x ..x. ..x. x...
            +conga      .... ..x. .... ..xx
            +conga_mute ..x. .... ..x. ....
            +cowbell    x.x. x.x. x.x. x.x.
            bass        .... ..f- ---- r---
            comp        a-aa -a-a a-aa -a-a
        """),),
        (90, 115), ("minor", "harmonic_minor", "major"), ((0, 3, 4, 3), (0, 4), (1, 4, 0, 0)),
        call_response, ("syncopated", "hook", "steps"),
        Programs(kit=(0, 8), bass=(33, 32, 35), comp=(0, 1), pad=(61, 60), lead=(56, 57, 73)),
    ),
    "swing": Style(  # ride "ding ding-a", hi-hat foot on two and four, walking bass, Charleston comping
        (groove("4/4", """
            ride   x... x.x. x... x.x.
            pedal  .... x... .... x...
            kick   g... g... g... g...
            snare  .... .... .... ..g.
            bass   w--- w--- w--- w---
            comp   x--- --x- .... ....
        """, swing=0.67),),
        (110, 200), ("major", "dorian"), ((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4)),
        aaba, ("steps", "syncopated", "leaps"),
        Programs(kit=(32, 40), bass=(43, 32), comp=(0, 26, 11), pad=(48, 61), lead=(65, 66, 56, 57)),
        chords="seventh",
    ),
    "drum_n_bass": Style(
        (groove("4/4", """
            kick   x... .... ..x. ....
            snare  .... x..g .g.. x...
            hat    o.o. o.oo o.o. o.o.
            bass   r--- ---- --.. o---
            comp   x-.. .... x-.. ....
        """),),
        (160, 180), ("minor", "phrygian", "dorian"), ((0, 5), (0, 3, 5, 4), (0, 6, 5, 6)),
        build_drop, ("held", "hook", "steps"),
        Programs(kit=(24, 25, 8), bass=(38, 39, 87), comp=(4, 5, 62), pad=(88, 89, 90, 95), lead=(80, 81, 73)),
    ),
    "trap": Style(  # half time: clap on three, 808 bass, hi-hat rolls
        (groove("4/4", """
            kick   x... .... ..x. .x..
            clap   .... .... x... ....
            hat    x.x. x.x. x.x. x.x.
            bass   r--- ---- ..r- --r-
            comp   a--a --a- a--a --a-
        """, rolls=True),),
        (130, 160), ("minor", "harmonic_minor", "phrygian"), ((0, 5), (0, 3, 5, 4), (0, 5, 6, 4)),
        verse_chorus, ("syncopated", "hook", "held"),
        Programs(kit=(25, 24), bass=(38, 39, 87), comp=(10, 8, 46, 12), pad=(88, 89, 90, 95), lead=(80, 81, 73)),
    ),
    "polka_march": Style(  # oom-pah in 2/4: tuba on the beats, accordion or snare on the off-beats
        (groove("2/4", """
            kick   x... x...
            snare  ..x. ..x.
            bass   r--. f--.
            comp   ..x- ..x-
        """), groove("2/4", """
            kick   x... x...
            snare  x.gg x.x.
            crash  .... x...
            bass   r--. f--.
            comp   x-.. x-x.
        """)),
        (100, 130), ("major", "mixolydian"), ((0, 4, 4, 0), (0, 0, 4, 4, 0, 0, 4, 0), (0, 3, 4, 0)),
        rondo, ("leaps", "steps", "motif"),
        Programs(kit=(48, 0), bass=(58, 32), comp=(21, 23, 0), pad=(61, 60, 48), lead=(71, 56, 72)),
    ),
    "gospel": Style(
        (groove("6/8", """
            kick        x..... ......
            snare       ...... x.....
            hat         o.o.o. o.o.o.
            +tambourine ..x.x. x.x.x.
            +clap       ...... x.....
            bass        r----- f---t-
            comp        x-x-x- x-x-x-
        """),),
        (50, 70), ("major", "mixolydian", "dorian"), ((0, 3, 0, 4), (0, 5, 1, 4), (3, 4, 2, 5)),
        verse_chorus, ("held", "steps", "leaps"),
        Programs(kit=(0, 8), bass=(33, 32), comp=(0, 2, 16), pad=(16, 17, 19), lead=(65, 66, 56)),
        chords="seventh",
    ),
    "country": Style(  # train beat: brushed sixteenths on the snare, root-fifth bass
        (groove("4/4", """
            kick   x... .... x... ....
            snare  ggXg ggXg ggXg ggXg
            bass   r--- --.. f--- --..
            comp   .... x-x. .... x-x.
        """),),
        (110, 150), ("major", "mixolydian", "major_pentatonic"), ((0, 3, 4, 0), (0, 0, 3, 4), (0, 4, 5, 3)),
        verse_chorus, ("steps", "hook", "leaps"),
        Programs(kit=(40, 0), bass=(32, 33), comp=(25, 24, 105), pad=(48, 49), lead=(40, 22, 105)),
    ),
    "afrobeat": Style(  # a one- or two-chord vamp, interlocking guitar, congas and shekere
        (groove("4/4", """
            kick     x..x ..x. .x.. ..x.
            snare    .... x... .g.. x..g
            hat      x.xx x.xx x.xx x.xx
            +conga   ..x. x.xx ..x. x.x.
            +cabasa  x.xx x.xx x.xx x.xx
            +cowbell x.x. .x.x .x.x .x..
            bass     r--. .r.f ..o. f-t.
            comp     a.aa .a.a a.aa .a.a
        """),),
        (100, 125), ("dorian", "minor_pentatonic", "mixolydian"), ((0,), (0, 3), (0, 6)),
        call_response, ("hook", "syncopated", "steps"),
        Programs(kit=(0, 8), bass=(33, 34), comp=(28, 27, 16), pad=(16, 17), lead=(56, 66, 65)),
    ),
    "odd_meter": Style(  # 5/4 as 3+2, 7/8 as 2+2+3
        (groove("5/4", """
            kick   x... .... .x.. x... ....
            snare  .... .... x... .... x...
            hat    x.x. x.x. x.x. x.x. x.x.
            bass   r--- ---f ..r. f--- t---
            comp   x--- ---- x--- x--- ----
        """), groove("7/8", """
            kick   x... .... ......
            snare  .... x... ....x.
            hat    x.x. x.x. x.x.x.
            bass   r--. f--. r---f-
            comp   x--- x--- x-----
        """)),
        (110, 150), ("dorian", "lydian", "phrygian", "harmonic_minor"), ((0, 1), (0, 6, 5, 6), (0, 3, 1, 4)),
        through_composed, ("steps", "leaps", "motif"),
        Programs(kit=(8, 16, 0), bass=(33, 34, 36), comp=(4, 11, 29), pad=(50, 89), lead=(81, 30, 73)),
    ),
}
# fmt: on
