"""Compiled OpenVINO stream models cached on disk: imported only when they check out, and exact either way."""

from __future__ import annotations

import os

import numpy as np
import pytest
from runtime_bundle import STEMS, tiny_bundle

from unmix.runtime.manifest import read_manifest
from unmix.runtime.openvino_cache import CACHE_ENV, default_cache_dir, describe

pytest.importorskip("openvino")

from unmix.runtime.openvino_backend import OpenVinoEngine  # noqa: E402


def _engine(tmp_path_factory, cache):
    bundle = tiny_bundle(tmp_path_factory)
    paths = {stem: bundle / f"{stem}.onnx" for stem in STEMS}
    return OpenVinoEngine(paths, read_manifest(bundle), threads=1, precision="fp32", cache=cache)


def _stream(engine, x: np.ndarray, block: int = 64) -> list[np.ndarray]:
    return _stream_run(engine.stateful_run(1, block), x)


def _stream_run(run, x: np.ndarray) -> list[np.ndarray]:
    """Each stem's output of `run` fed `x` (1, 1, frames) 100 frames at a time."""
    parts = [run.feed([x[:, :, i : i + 100]]) for i in range(0, x.shape[2], 100)] + [run.finish()]
    return [np.concatenate([part[k] for part in parts if part], axis=2) for k in range(len(STEMS))]


def _entry(folder) -> dict[str, int | bytes]:
    """The blobs' modification times and the records' contents (an import touches its record's time)."""
    return {
        path.name: path.read_bytes() if path.suffix == ".json" else path.stat().st_mtime_ns
        for path in sorted(folder.iterdir())
    }


@pytest.fixture(scope="module")
def signal():
    return (0.3 * np.random.default_rng(4).standard_normal((1, 1, 1500))).astype(np.float32)


def test_a_second_engine_imports_the_stored_compile_and_streams_the_same(tmp_path_factory, tmp_path, signal):
    first = _stream(_engine(tmp_path_factory, tmp_path), signal)
    stored = _entry(tmp_path)
    assert len(stored) == 5 and sum(name.endswith(".blob") for name in stored) == 4  # 2 parts × plain, masked
    second = _stream(_engine(tmp_path_factory, tmp_path), signal)
    assert _entry(tmp_path) == stored  # imported: nothing compiled or written again
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    _stream(_engine(tmp_path_factory, tmp_path), signal, block=128)  # another shape: an entry of its own
    assert len(_entry(tmp_path)) == 10


def test_a_damaged_blob_is_never_imported(tmp_path_factory, tmp_path, signal):
    expected = _stream(_engine(tmp_path_factory, None), signal)
    _stream(_engine(tmp_path_factory, tmp_path), signal)
    blob = next(path for path in sorted(tmp_path.iterdir()) if path.name.endswith(".2.blob"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    outputs = _stream(_engine(tmp_path_factory, tmp_path), signal)
    for a, b in zip(expected, outputs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert blob.read_bytes() != bytes(data)  # compiled anew and stored again


def test_a_cache_that_can_only_be_read_still_serves(tmp_path_factory, tmp_path, signal, monkeypatch):
    expected = _stream(_engine(tmp_path_factory, tmp_path), signal)
    stored = _entry(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(os, "utime", refuse)  # as on a shared, read-only cache (root ignores permission bits)
    for a, b in zip(expected, _stream(_engine(tmp_path_factory, tmp_path), signal), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _entry(tmp_path) == stored  # imported, not compiled and stored again


def test_no_cache_or_an_unwritable_one_only_costs_the_compile(tmp_path_factory, tmp_path, signal, monkeypatch):
    expected = _stream(_engine(tmp_path_factory, None), signal)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    for a, b in zip(expected, _stream(_engine(tmp_path_factory, blocked / "cache"), signal), strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "unmix" / "openvino"
    assert not os.path.exists(tmp_path / "xdg")


def test_the_least_recently_used_entries_go_beyond_the_limit(tmp_path_factory, tmp_path, signal, monkeypatch):
    monkeypatch.setattr("unmix.runtime.openvino_cache.MAX_ENTRIES", 2)
    engine = _engine(tmp_path_factory, tmp_path)
    for block in (64, 128):
        _stream(engine, signal, block)
    first = min(tmp_path.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
    _stream(_engine(tmp_path_factory, tmp_path), signal, 64)  # imported: now the most recently used
    _stream(engine, signal, 256)  # a third entry: the least recently used one (block 128) goes, with its blobs
    records = sorted(tmp_path.glob("*.json"))
    assert len(records) == 2 and first in records and len(list(tmp_path.glob("*.blob"))) == 8


def test_the_doctor_says_where_the_cache_is_and_how_large(tmp_path_factory, tmp_path, signal):
    assert describe(tmp_path / "none") == f"{tmp_path / 'none'} (empty)" and describe(None).startswith("off")
    _stream(_engine(tmp_path_factory, tmp_path), signal)
    size = sum(path.stat().st_size for path in tmp_path.iterdir()) / 2**20
    assert describe(tmp_path) == f"{tmp_path}: 1 entry, {size:.0f} MiB (safe to delete)"


def test_a_stream_holds_one_model_of_each_part_and_streams_the_same(tmp_path_factory, tmp_path, signal):
    expected = _stream(_engine(tmp_path_factory, None), signal)  # no cache: every model stays compiled
    engine = _engine(tmp_path_factory, tmp_path)
    _stream(engine, signal)  # compiles and stores the entry
    run = engine.stateful_run(1, 64)
    parts, held = [], []
    for i in range(0, signal.shape[2], 100):
        parts.append(run.feed([signal[:, :, i : i + 100]]))
        held.append([compiled.resident for compiled in engine._streams[1, 64]])
    parts.append(run.finish())
    assert all(len(kinds) == 1 for step in held for kinds in step)  # one model per part at any time
    assert {kinds[0] for step in held for kinds in step} == {"plain", "masked"}  # and both were needed
    outputs = [np.concatenate([part[k] for part in parts if part], axis=2) for k in range(len(STEMS))]
    for a, b in zip(expected, outputs, strict=True):  # the variables moved over exactly, at every switch
        np.testing.assert_array_equal(a, b)
    second = engine.stateful_run(1, 64)  # another stream: the parts' models come back from the cache
    for a, b in zip(expected, _stream_run(second, signal), strict=True):
        np.testing.assert_array_equal(a, b)
