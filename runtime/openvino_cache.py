"""Compiled OpenVINO models kept on disk, so that a later process imports them instead of compiling them again.

An entry is stored under a digest of everything its models were compiled from (`key`: the graphs' SHA-256, the
code that built the models, OpenVINO's version, the CPU, the compile settings and shapes). It is imported only when
its recorded key equals the one asked for and every blob's SHA-256 matches its record; anything else is compiled
anew and stored again. Storing is best effort: a cache that cannot be written only costs the compile.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic import write_atomically

CACHE_ENV = "UNMIX_OPENVINO_CACHE"  # a folder for the cache, or "off"
FORMAT = 1
MAX_ENTRIES = 8  # the least recently used go first: entries of older code or other settings are never used again


def default_cache_dir() -> Path | None:
    """`$UNMIX_OPENVINO_CACHE` ("off" or empty: no cache), else `$XDG_CACHE_HOME/unmix/openvino` (default
    `~/.cache/unmix/openvino`)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unmix" / "openvino"


def describe(folder: Path | None) -> str:
    """One line on the cache in `folder` for `unmix doctor`: where it is, how many entries and how large."""
    if folder is None:
        return f"off ({CACHE_ENV}=off)"
    if not folder.is_dir():
        return f"{folder} (empty)"
    entries = list(folder.glob("*.json"))
    size = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
    return (
        f"{folder}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {size / 2**20:.0f} MiB (safe to delete)"
    )


class CompiledCache:
    """Entries of compiled models (one or several) with a JSON-ready `extra` each, in `folder` (None: off)."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def _paths(self, key: dict) -> tuple[Path, str]:
        assert self.folder is not None  # only called when the cache is on
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.folder / f"{name}.json", name

    def load(self, core, key: dict, config: dict, indices: Sequence[int] | None = None) -> tuple[list[Any], Any] | None:
        """The compiled models stored under `key`, imported with `config`, and their `extra`; None when there is
        no such entry or it does not check out. `indices`: import only the models at these places (the others are
        None)."""
        if self.folder is None:
            return None
        record_path, name = self._paths(key)
        try:
            record = json.loads(record_path.read_text())
            if record.get("format") != FORMAT or record.get("key") != key:
                return None
            compiled: list[Any] = []
            for index, expected in enumerate(record["sha256"]):
                if indices is not None and index not in indices:
                    compiled.append(None)
                    continue
                blob = (self.folder / f"{name}.{index}.blob").read_bytes()
                if hashlib.sha256(blob).hexdigest() != expected:
                    return None  # damaged or replaced: never imported
                compiled.append(core.import_model(io.BytesIO(blob), "CPU", config))
            with contextlib.suppress(OSError):  # a cache others may read but not write still serves
                os.utime(record_path)  # used: the last to go
            return compiled, record.get("extra")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):  # RuntimeError: OpenVINO refused the blob
            return None

    def store(self, key: dict, compiled: Sequence[Any], extra: Any) -> bool:
        """Store `compiled` (OpenVINO compiled models) and `extra` under `key`: each blob whole, then the record
        that names them, so a reader never finds a record of blobs not yet written. Returns whether it did."""
        if self.folder is None:
            return False
        record_path, name = self._paths(key)
        try:
            digests = []
            for index, model in enumerate(compiled):
                stream = io.BytesIO()
                model.export_model(stream)
                blob = stream.getvalue()
                write_atomically(self.folder / f"{name}.{index}.blob", blob)
                digests.append(hashlib.sha256(blob).hexdigest())
            record = {"format": FORMAT, "key": key, "sha256": digests, "extra": extra}
            write_atomically(record_path, json.dumps(record, indent=1))
            self._evict()
        except (OSError, RuntimeError):
            return False  # best effort: the models stay compiled in this process
        return True

    def _evict(self) -> None:
        """Remove the least recently used entries beyond `MAX_ENTRIES` (the record first, then its blobs)."""
        assert self.folder is not None
        records = sorted(self.folder.glob("*.json"), key=lambda path: path.stat().st_mtime_ns, reverse=True)
        for record in records[MAX_ENTRIES:]:
            record.unlink(missing_ok=True)
            for blob in self.folder.glob(f"{record.stem}.*.blob"):
                blob.unlink(missing_ok=True)
