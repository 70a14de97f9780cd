"""unmix.runtime.atomic: folders appear whole with ordinary modes, or not at all."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from unmix.runtime.atomic import atomic_folder, replace_atomically, write_atomically


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_completed_folder_replaces_the_old_one_with_ordinary_modes(tmp_path, umask_022):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "stale.onnx").write_text("old")
    with atomic_folder(target) as folder:
        save_file({"w": torch.zeros(2)}, folder / "model.safetensors")  # safetensors writes 0600
        (folder / "int8").mkdir()
    assert sorted(p.name for p in target.iterdir()) == ["int8", "model.safetensors"]
    assert (_mode(target), _mode(target / "int8"), _mode(target / "model.safetensors")) == (0o755, 0o755, 0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary or old sibling left


def test_a_failed_block_leaves_the_old_folder_and_no_temporary(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "kept.onnx").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "half.onnx").write_text("new")
        raise RuntimeError("export failed")
    assert [p.name for p in target.iterdir()] == ["kept.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_replaced_file_gets_the_ordinary_mode(tmp_path, umask_022):
    path = tmp_path / "curves.png"
    replace_atomically(path, lambda tmp: tmp.write_bytes(b"png"))
    assert path.read_bytes() == b"png" and _mode(path) == 0o644


def test_written_bytes_appear_whole_with_the_ordinary_mode_or_not_at_all(tmp_path, umask_022):
    path = tmp_path / "results" / "rtf.json"  # the folder is created
    write_atomically(path, '{"rtf": 0.23}\n')
    assert path.read_text() == '{"rtf": 0.23}\n' and _mode(path) == 0o644

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_atomically(path, fail)
    assert path.read_text() == '{"rtf": 0.23}\n' and [p.name for p in path.parent.iterdir()] == ["rtf.json"]
