"""What a corpus may be rendered from: the training pool, the held-out pool, and the reserved material.

The held-out pool shares no SoundFont, singer or composition style with the training pool, so a model scored on a
corpus rendered from it is scored on material it never heard (`unmix-train phase1/phase2 --val-data`). Neither pool
may touch the material reserved for the external evaluation (`RESERVED`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import CorpusError

# The external evaluation's material: never in training, validation or tuning.
RESERVED = {
    "timgm6mb": "the TimGM6mb SoundFont",
    "avl": "the AVL drum kits",
    "ked": "Festival's ked voice",
    "planetblupi": "the planetblupi MIDI songs",
    "chorale": "music21's chorales",
}
SOUNDFONT_FOLDERS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3"))
# Debian packages: fluid-soundfont-gm, opl3-soundfont, musescore-general-soundfont(-small).
APT_PACKAGES = {
    "FluidR3_GM.sf2": "fluid-soundfont-gm",
    "OPL-3_FM_128M.sf2": "opl3-soundfont",
    "MuseScore_General.sf3": "musescore-general-soundfont",
    "MuseScore_General_Lite.sf3": "musescore-general-soundfont-small",
}


@dataclass(frozen=True)
class Pool:
    """The SoundFonts (file names in `SOUNDFONT_FOLDERS`, or paths), singers and styles one corpus draws from."""

    name: str
    soundfonts: tuple[str, ...]
    singers: tuple[str, ...]
    styles: tuple[str, ...]


POOLS = {
    "train": Pool(
        "train",
        ("FluidR3_GM.sf2", "OPL-3_FM_128M.sf2"),
        (
            "soprano",
            "tenor",
            "baritone",
            "belter",
            "breathy",
            "child",
            "festival-kal",
            "festival-czech",
            "festival-czech-ph",
            "festival-finnish-lj",
        ),
        (
            "waltz",
            "ballad",
            "blues_shuffle",
            "doo_wop",
            "reggae",
            "ska",
            "bossa_nova",
            "swing",
            "drum_n_bass",
            "trap",
            "polka_march",
            "country",
        ),
    ),
    "held-out": Pool(
        "held-out",
        ("MuseScore_General.sf3", "MuseScore_General_Lite.sf3"),
        ("alto", "bass", "operatic", "twang", "festival-italian-lp", "festival-italian-pc", "festival-finnish-mv"),
        ("salsa", "afrobeat", "gospel", "odd_meter"),
    ),
}


def check_allowed(name: str) -> None:
    """Raise CorpusError when `name` (a resource's file name, voice or style) is reserved material."""
    lowered = name.lower()
    for word, what in RESERVED.items():
        if word in lowered:
            raise CorpusError(f"{name}: {what} are reserved for the external evaluation and never rendered")


def find_soundfonts(pool: Pool, extra: tuple[Path, ...] = ()) -> list[Path]:
    """The pool's SoundFonts that are installed, then `extra` ones; raises CorpusError when none is, or when a
    path is reserved material or missing."""
    found = []
    for name in pool.soundfonts:
        check_allowed(name)
        path = next((folder / name for folder in SOUNDFONT_FOLDERS if (folder / name).is_file()), None)
        if path is not None:
            found.append(path)
    for path in extra:
        check_allowed(path.name)
        if not path.is_file():
            raise CorpusError(f"{path}: no such SoundFont")
        found.append(path)
    if not found:
        packages = " ".join(APT_PACKAGES.get(name, name) for name in pool.soundfonts)
        raise CorpusError(f"no SoundFont of the {pool.name} pool is installed: apt-get install {packages}")
    return found
