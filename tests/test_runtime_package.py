"""unmix.runtime as a distributed package: its version, and the PEP 561 marker that makes its annotations count."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

import unmix.runtime

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distributions():
    assert unmix.runtime.__version__ == metadata.version("unmix") != "0+unknown"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_py_typed_is_shipped():
    import tomllib

    assert (Path(unmix.runtime.__file__).parent / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["unmix.runtime"]
