"""A run folder: its options, its latest checkpoint and its per-step metrics.

RUN/options.json     the options the run was started with (a resume must agree with them)
RUN/checkpoint/      the latest checkpoint: model.safetensors + config.json (our format) and the
                     training state beside them, all replaced atomically
RUN/metrics.jsonl    one JSON object per training step, plus `"kind": "val"` lines for validation
"""

from __future__ import annotations

import json
from pathlib import Path

from unmix.runtime.atomic import replace_atomically

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
from .options import OptionsError, TrainOptions

OPTIONS_FILE = "options.json"
CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def read_metrics(run: str | Path) -> list[dict]:
    """Every record of a run's metrics log, in order."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        raise OptionsError(f"{run}: no {METRICS_FILE} (not a training run folder?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resolve_checkpoint(path: Path) -> Path:
    """A run folder stands for its latest checkpoint; any other path is returned unchanged."""
    inside = path / CHECKPOINT_DIR
    return inside if (inside / WEIGHTS_FILE).is_file() else path


class RunFolder:
    def __init__(self, root: Path):
        self.root = root
        self.checkpoint = root / CHECKPOINT_DIR
        self.metrics = root / METRICS_FILE

    def check(self, options: TrainOptions, role: str, world_size: int) -> dict | None:
        """Check, without writing, that the folder suits a fresh run or a resume of the same run.

        Returns the saved checkpoint's config.json when resuming, None for a fresh run. A folder whose
        run never reached its first checkpoint may be started afresh.
        """
        if not options.resume:
            if self.checkpoint.exists():
                raise OptionsError(
                    f"{self.root} already holds a run; pass --resume to continue it or choose another --out"
                )
            return None
        if not (self.checkpoint / CONFIG_FILE).is_file() or not (self.root / OPTIONS_FILE).is_file():
            raise OptionsError(f"{self.root}: no checkpoint to resume from")
        saved = json.loads((self.root / OPTIONS_FILE).read_text())
        problems = options.differences(saved)
        if saved.get("role") != role:
            problems.insert(0, f"role: saved {saved.get('role')}, given {role}")
        if saved.get("world_size") != world_size:
            problems.append(f"processes: saved {saved.get('world_size')}, given {world_size}")
        if problems:
            raise OptionsError(f"cannot resume {self.root} with other options ({'; '.join(problems)})")
        return json.loads((self.checkpoint / CONFIG_FILE).read_text())

    def start(self, options: TrainOptions, role: str, world_size: int) -> None:
        """Record a fresh run's options and start an empty metrics log."""
        self.root.mkdir(parents=True, exist_ok=True)
        record = {"role": role, "world_size": world_size, **options.to_json()}
        _write_text(self.root / OPTIONS_FILE, json.dumps(record, indent=2))
        self.metrics.write_text("")

    def truncate_metrics(self, step: int) -> None:
        """Drop records after `step` (written by a run that stopped before saving them)."""
        kept = [record for record in read_metrics(self.root) if record["step"] <= step]
        _write_text(self.metrics, "".join(json.dumps(record) + "\n" for record in kept))

    def log(self, record: dict) -> None:
        with self.metrics.open("a") as file:
            file.write(json.dumps(record) + "\n")
