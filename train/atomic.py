"""Files and folders that appear whole or not at all: written under a temporary sibling, then renamed.

What appears gets the ordinary modes the umask gives (not mkstemp's or safetensors' 0600, nor
mkdtemp's 0700), so shared installs and run folders stay readable as any other output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _ordinary_modes(path: Path) -> None:
    """chmod `path` (and, for a folder, everything in it) to 0777/0666 less the umask."""
    umask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary sibling of `path`, then rename it into place."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        _ordinary_modes(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; it replaces `target` only if the block completes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        _ordinary_modes(tmp)
        if target.exists():
            # Folders cannot be swapped atomically: move the old one aside under a fresh name first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there when the block failed
