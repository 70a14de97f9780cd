"""The score a corpus song is rendered from: timed notes in parts, each part one instrument of one stem."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Note:
    """One note: `start` and `duration` in seconds from the song's start, `pitch` a MIDI note number (for
    percussion, the General MIDI drum key), `velocity` 1–127."""

    start: float
    duration: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Instrument:
    """What plays a part.

    kind: "program", a General MIDI melodic program (`program` 0–127) of the song's SoundFont; "kit", a General
    MIDI drum kit (`program`: the kit's preset number in bank 128); "singer", the singer named `voice`
    (`unmix.train.corpus.singers.SINGERS`).
    """

    kind: str
    program: int = 0
    voice: str = ""


@dataclass
class Part:
    """One part of a song: `stem` (drums, bass, other or vocals) and `name` (what it plays, for the metadata),
    its `instrument` and `notes`, its place in the stereo field (`pan`, −1 left … +1 right) and its level in
    its stem (`level_db`)."""

    stem: str
    name: str
    instrument: Instrument
    notes: list[Note] = field(default_factory=list)
    pan: float = 0.0
    level_db: float = 0.0


@dataclass
class Song:
    """A whole song: `seconds` long, its tempo (BPM), `meter` (beats per bar), `key` (the tonic's pitch class,
    0 = C), `mode` (a scale name), `style` (the composition rules it was made by), its `form` as (section name,
    start s, end s) and its parts."""

    seconds: float
    tempo: float
    meter: int
    key: int
    mode: str
    style: str
    form: list[tuple[str, float, float]]
    parts: list[Part]
