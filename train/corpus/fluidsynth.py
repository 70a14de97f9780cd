"""General MIDI parts rendered by FluidSynth (libfluidsynth, through ctypes) into dry float32 stereo."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .score import Instrument, Note

DRUM_CHANNEL = 9  # General MIDI's percussion channel: bank 128 holds the kits
_POINTER, _INT = ctypes.c_void_p, ctypes.c_int


class FluidSynthError(RuntimeError):
    """libfluidsynth is missing, or a SoundFont does not load."""


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("fluidsynth") or "libfluidsynth.so.3"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise FluidSynthError("the corpus needs libfluidsynth: apt-get install libfluidsynth3") from None
    signatures = {
        "new_fluid_settings": (_POINTER, []),
        "delete_fluid_settings": (None, [_POINTER]),
        "fluid_settings_setnum": (_INT, [_POINTER, ctypes.c_char_p, ctypes.c_double]),
        "fluid_settings_setint": (_INT, [_POINTER, ctypes.c_char_p, _INT]),
        "new_fluid_synth": (_POINTER, [_POINTER]),
        "delete_fluid_synth": (None, [_POINTER]),
        "fluid_synth_sfload": (_INT, [_POINTER, ctypes.c_char_p, _INT]),
        "fluid_synth_program_select": (_INT, [_POINTER, _INT, _INT, _INT, _INT]),
        "fluid_synth_noteon": (_INT, [_POINTER, _INT, _INT, _INT]),
        "fluid_synth_noteoff": (_INT, [_POINTER, _INT, _INT]),
        "fluid_synth_system_reset": (_INT, [_POINTER]),
        "fluid_synth_write_float": (_INT, [_POINTER, _INT, _POINTER, _INT, _INT, _POINTER, _INT, _INT]),
        "fluid_set_log_function": (_POINTER, [_INT, _POINTER, _POINTER]),
    }
    for function, (result, arguments) in signatures.items():
        getattr(lib, function).restype = result
        getattr(lib, function).argtypes = arguments
    for level in range(5):  # FLUID_PANIC … FLUID_DBG: a missing preset is our metadata's business, not stderr's
        lib.fluid_set_log_function(level, None, None)
    return lib


def available() -> bool:
    """Whether libfluidsynth loads."""
    try:
        _library()
    except FluidSynthError:
        return False
    return True


class SoundFontSynth:
    """One FluidSynth instance with one SoundFont loaded, its reverb and chorus off (the mixer adds its own).

    A context manager; `render` plays one part at a time from a reset synth, so parts never bleed into each other.
    """

    def __init__(self, soundfont: Path, sample_rate: int):
        lib = _library()
        self.sample_rate = sample_rate
        self._settings = lib.new_fluid_settings()
        lib.fluid_settings_setnum(self._settings, b"synth.sample-rate", float(sample_rate))
        lib.fluid_settings_setint(self._settings, b"synth.reverb.active", 0)
        lib.fluid_settings_setint(self._settings, b"synth.chorus.active", 0)
        lib.fluid_settings_setint(self._settings, b"synth.polyphony", 512)
        self._synth = lib.new_fluid_synth(self._settings)
        self._font = lib.fluid_synth_sfload(self._synth, str(soundfont).encode(), 1)
        if self._font < 0:
            self.close()
            raise FluidSynthError(f"{soundfont}: FluidSynth cannot load this SoundFont")

    def render(self, instrument: Instrument, notes: Sequence[Note], frames: int) -> np.ndarray:
        """(2, frames) float32: `notes` played by `instrument` (a "program" or a "kit"), dry and centred.

        Notes start and stop at sample-exact positions; what still sounds at `frames` is cut there.
        """
        lib = _library()
        lib.fluid_synth_system_reset(self._synth)
        drums = instrument.kind == "kit"
        channel = DRUM_CHANNEL if drums else 0
        lib.fluid_synth_program_select(self._synth, channel, self._font, 128 if drums else 0, instrument.program)
        events = []  # (frame, order, key, velocity): note-offs first at a shared frame, so a repeated key restarts
        for note in notes:
            start = int(round(note.start * self.sample_rate))
            end = max(start + 1, int(round((note.start + note.duration) * self.sample_rate)))
            events.append((start, 1, note.pitch, int(np.clip(note.velocity, 1, 127))))
            events.append((end, 0, note.pitch, 0))
        events.sort()
        out = np.zeros((2, frames), np.float32)
        done = 0
        for frame, kind, key, velocity in [*events, (frames, 0, -1, 0)]:
            frame = min(frame, frames)
            if frame > done:
                self._write(out, done, frame)
                done = frame
            if key < 0 or frame >= frames:
                continue
            if kind:
                lib.fluid_synth_noteon(self._synth, channel, key, velocity)
            else:
                lib.fluid_synth_noteoff(self._synth, channel, key)
        return out

    def _write(self, out: np.ndarray, start: int, end: int) -> None:
        left, right = out[0, start:end], out[1, start:end]
        _library().fluid_synth_write_float(self._synth, end - start, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1)

    def close(self) -> None:
        """Free the synth and its settings; closing again does nothing."""
        lib = _library()
        if self._synth:
            lib.delete_fluid_synth(self._synth)
            self._synth = None
        if self._settings:
            lib.delete_fluid_settings(self._settings)
            self._settings = None

    def __enter__(self) -> SoundFontSynth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
