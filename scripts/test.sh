#!/usr/bin/env bash
# Set up a virtual environment with everything the test suite needs, then run it.
# Usage: scripts/test.sh [pytest args...]     (VENV=path to use another environment folder)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
# The CPU build of torch first, so no extra below pulls a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[train,export,bench,openvino,peers,dev]"
python -m ruff check .   # lint (pyproject.toml [tool.ruff]): imports, bugbear, pyupgrade, pyflakes
python -m ruff format --check .   # formatting, as `ruff format` writes it
python -m pytest "$@"
