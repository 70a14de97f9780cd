"""Files and folders that appear whole or not at all: written under a temporary sibling, then renamed.

The one place for this in unmix (train, export and bench use it too). What appears gets the ordinary modes the
umask gives (not mkstemp's or safetensors' 0600, nor mkdtemp's 0700), so shared installs, run folders and stems
stay readable as any other output.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def new_temporary(target: Path, suffix: str = ".part") -> Path:
    """A new, empty, hidden file beside `target`, named `.<name>.<random><suffix>`, created with mode 0666 so that
    the umask applies as for any output (changing the umask to read it is not thread-safe)."""
    while True:
        temp = target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temp
        except FileExistsError:
            continue


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _ordinary_modes(path: Path) -> None:
    """chmod `path` (and, for a folder, everything in it) to 0777/0666 less the umask."""
    umask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Let `write` fill a temporary sibling of `path` (with `path`'s suffix, which some writers read the format
    from), then rename it into place; the temporary is removed if `write` fails."""
    tmp = new_temporary(path, suffix=path.suffix)
    try:
        write(tmp)
        _ordinary_modes(tmp)  # a writer may have replaced the file with one of its own modes
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes | bytearray | memoryview | str) -> None:
    """`data` (str as UTF-8) into `path`, whole or not at all; the parent folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: tmp.write_bytes(data.encode() if isinstance(data, str) else data))


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
