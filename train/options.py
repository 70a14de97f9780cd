"""What a training run is asked to do: every option of both phases, checked, with its defaults.

Defaults are the paper's recipe (spec §5.2/§5.3): chunks of 393216 samples, batch 4, Adam 3e-4 with
100 warm-up steps, clipping at 1.0, weight EMA 0.9995, random shift and stereo blend.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .augment import Augmentation

# Options that may change when a run is resumed; any other difference is refused.
RESUMABLE = frozenset(
    {"steps", "save_every", "val_every", "val_data", "workers", "device", "resume", "progress", "trust_pickle"}
)


class OptionsError(ValueError):
    """Options that cannot describe a training run."""


@dataclass(frozen=True)
class WeightSource:
    """Where initial weights come from: `scratch`, `jukebox:PATH` (a Jukebox/paper pickle) or `unmix:PATH`."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> WeightSource:
        """Parse `scratch`, `jukebox:PATH` or `unmix:PATH`; a bare path means `unmix:PATH`."""
        kind, sep, path = text.partition(":")
        if text == "scratch":
            return cls("scratch")
        if sep and kind in ("jukebox", "unmix") and path:
            return cls(kind, Path(path).expanduser().resolve())
        if not sep or len(kind) == 1:  # a bare path (also Windows drive letters)
            return cls("unmix", Path(text).expanduser().resolve())
        raise OptionsError(f"weights {text!r}: expected scratch, jukebox:PATH or unmix:PATH")

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class TrainOptions:
    """Options of `train_phase1` / `train_phase2` (see `unmix-train phase1 --help` for each)."""

    data: Path
    out: Path
    stem: str = "other"
    config: str | None = None  # phase 1: preset or JSON; default: the init checkpoint's, else `paper`
    init: str | None = None  # phase 1 default `scratch`; phase 2 default: the VQ-VAE's own encoder
    vqvae: str | None = None  # phase 2: the phase-1 VQ-VAE (unmix:PATH, jukebox:PATH or a run folder)
    steps: int = 80_000
    batch: int = 4
    chunk: int = 393_216
    lr: float = 3e-4
    warmup: int = 100
    clip: float = 1.0
    ema_decay: float = 0.9995
    seed: int = 0
    save_every: int = 1000
    val_every: int = 1000
    val_songs: int | None = None  # default: about a tenth of the songs
    val_chunks: int = 4
    val_data: Path | None = None  # a second validation set: the test split of a corpus of unseen material
    stats_chunks: int = 32
    remix: float = 0.0
    shift: bool = True
    blend: bool = True
    gain_db: float = 0.0
    polarity: bool = False
    eq_db: float = 0.0
    speed: float = 0.0
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 or fp32 anywhere
    resume: bool = False
    trust_pickle: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data).expanduser().resolve())
        object.__setattr__(self, "out", Path(self.out).expanduser().resolve())
        if self.val_data is not None:
            object.__setattr__(self, "val_data", Path(self.val_data).expanduser().resolve())
        positive = {
            "steps": self.steps,
            "batch": self.batch,
            "chunk": self.chunk,
            "val_chunks": self.val_chunks,
            "stats_chunks": self.stats_chunks,
        }
        for name, value in positive.items():
            if value < 1:
                raise OptionsError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        for name in ("save_every", "val_every", "warmup", "workers"):
            if getattr(self, name) < 0:
                raise OptionsError(f"--{name.replace('_', '-')} must not be negative")
        if not 0.0 <= self.remix <= 1.0:
            raise OptionsError(f"--remix is a probability in [0, 1] (got {self.remix})")
        try:
            self.augmentation  # noqa: B018 - checks the ranges
        except ValueError as error:
            raise OptionsError(f"augmentation: {error}") from None
        if not 0.0 <= self.ema_decay < 1.0:
            raise OptionsError(f"--ema-decay must be in [0, 1) (got {self.ema_decay})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise OptionsError(f"--precision must be auto, bf16 or fp32 (got {self.precision!r})")

    @property
    def augmentation(self) -> Augmentation:
        """The example augmentation these options ask for (`--gain-db`, `--polarity`, `--eq-db`, `--speed`)."""
        return Augmentation(gain_db=self.gain_db, polarity=self.polarity, eq_db=self.eq_db, speed=self.speed)

    def to_json(self) -> dict:
        """JSON-ready options with weight sources normalised, as stored in the run folder."""
        data = {
            key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(self).items()
        }
        for key in ("init", "vqvae"):
            if data[key] is not None:
                data[key] = str(WeightSource.parse(data[key]))
        return data

    def differences(self, saved: dict) -> list[str]:
        """Options that differ from a saved run's, other than those a resume may change."""
        mine = self.to_json()
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        # A run saved before an option existed ran with its default.
        return [
            f"{key}: saved {json.dumps(saved.get(key))}, given {json.dumps(mine[key])}"
            for key in mine
            if key not in RESUMABLE and saved.get(key, defaults[key]) != mine[key]
        ]
