"""A SoundFont small enough to write in a test: one looped sine instrument under every General MIDI preset."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

KITS = (0, 8, 16, 24, 25, 32, 40, 48)
SINE_HZ, SAMPLE_RATE, ROOT_KEY = 440.0, 44000, 69  # 100 samples a period: a loop of whole periods


def _chunk(name: bytes, data: bytes) -> bytes:
    return name + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name(text: str) -> bytes:
    return text.encode()[:19].ljust(20, b"\0")


def write_tiny_soundfont(path: Path) -> Path:
    """Write the SoundFont to `path` (SoundFont 2.01: every bank-0 program and the GM kits in bank 128 play one
    sine at 440 Hz for key 69); returns `path`."""
    period = int(SAMPLE_RATE / SINE_HZ)
    sine = np.round(16000 * np.sin(2 * np.pi * np.arange(10 * period) / period)).astype("<i2")
    samples = sine.tobytes() + bytes(2 * 46)  # the format wants 46 zero samples after each sample
    presets = [(program, 0) for program in range(128)] + [(kit, 128) for kit in KITS]
    phdr = (
        b"".join(
            _name(f"p{bank}:{program}") + struct.pack("<HHHIII", program, bank, index, 0, 0, 0)
            for index, (program, bank) in enumerate(presets)
        )
        + _name("EOP")
        + struct.pack("<HHHIII", 0, 0, len(presets), 0, 0, 0)
    )
    pbag = b"".join(struct.pack("<HH", index, 0) for index in range(len(presets) + 1))
    pgen = struct.pack("<HH", 41, 0) * len(presets) + struct.pack("<HH", 0, 0)  # 41: instrument 0
    inst = _name("sine") + struct.pack("<H", 0) + _name("EOI") + struct.pack("<H", 1)
    ibag = struct.pack("<HH", 0, 0) + struct.pack("<HH", 2, 0)
    igen = struct.pack("<HH", 54, 1) + struct.pack("<HH", 53, 0) + struct.pack("<HH", 0, 0)  # loop, sample 0
    shdr = _name("sine") + struct.pack("<IIIIIBbHH", 0, len(sine), period, 9 * period, SAMPLE_RATE, ROOT_KEY, 0, 0, 1)
    shdr += _name("EOS") + bytes(26)
    terminal_modulator = bytes(10)
    body = (
        b"sfbk"
        + _list(
            b"INFO",
            _chunk(b"ifil", struct.pack("<HH", 2, 1)),
            _chunk(b"isng", b"EMU8000\0"),
            _chunk(b"INAM", b"tiny\0\0"),
        )
        + _list(b"sdta", _chunk(b"smpl", samples))
        + _list(
            b"pdta",
            _chunk(b"phdr", phdr),
            _chunk(b"pbag", pbag),
            _chunk(b"pmod", terminal_modulator),
            _chunk(b"pgen", pgen),
            _chunk(b"inst", inst),
            _chunk(b"ibag", ibag),
            _chunk(b"imod", terminal_modulator),
            _chunk(b"igen", igen),
            _chunk(b"shdr", shdr),
        )
    )
    path.write_bytes(_chunk(b"RIFF", body))
    return path
