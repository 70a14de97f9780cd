"""One root exception: everything unmix.runtime raises on purpose is an `UnmixError`, and keeps its builtin bases."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from runtime_bundle import tiny_bundle
from runtime_inputs import write

import unmix.runtime
from unmix.runtime import BundleError, Cancelled, Separator, UnmixError, read_manifest
from unmix.runtime.engine_cache import EngineCacheError, gpu_info


def _runtime_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of unmix.runtime (the optional backends' modules too)."""
    found = set()
    for module in pkgutil.iter_modules(unmix.runtime.__path__, "unmix.runtime."):
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == loaded.__name__:
                found.add(value)
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def test_every_runtime_exception_is_an_unmix_error():
    exceptions = _runtime_exceptions()
    assert {BundleError, Cancelled, EngineCacheError} <= set(exceptions)
    # The command line's private SIGTERM stand-in is a KeyboardInterrupt, which is what unwinds a run: not an error.
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in exceptions
        if not issubclass(cls, UnmixError) and not issubclass(cls, KeyboardInterrupt)
    ]
    assert strays == []


def test_every_public_exception_is_exported_and_an_unmix_error():
    public = [getattr(unmix.runtime, name) for name in unmix.runtime.__all__]
    exceptions = [value for value in public if isinstance(value, type) and issubclass(value, BaseException)]
    assert len(exceptions) >= 7 and all(issubclass(cls, UnmixError) for cls in exceptions)


def test_the_builtin_bases_are_kept():
    assert issubclass(BundleError, ValueError)  # `except ValueError` around read_manifest still works
    assert issubclass(EngineCacheError, RuntimeError)


def test_a_missing_bundle_is_caught_as_unmix_error_and_as_value_error(tmp_path):
    with pytest.raises(UnmixError, match="not a bundle"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="not a bundle"):
        read_manifest(tmp_path)


def test_a_missing_gpu_driver_is_caught_as_unmix_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UnmixError, match="no NVIDIA driver found"):
        gpu_info()


def test_a_cancelled_run_is_caught_as_unmix_error(tmp_path_factory, tmp_path):
    separator = Separator.from_bundle(tiny_bundle(tmp_path_factory), chunk=512, threads=1)
    source = write(tmp_path / "a.wav", frames=20_000)
    calls = []
    with pytest.raises(UnmixError, match="cancelled") as error:
        separator.separate_file(
            source, tmp_path / "out", progress=lambda d, t: calls.append(d), cancel=lambda: len(calls) >= 2
        )
    assert isinstance(error.value, Cancelled)
