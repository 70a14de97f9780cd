#!/usr/bin/env bash
# Set up a virtual environment with everything the test suite needs, then run it; with no arguments, also run
# the runtime's tests in a second environment that has only what `pip install unmix[openvino]` brings (no torch).
# Usage: scripts/test.sh [pytest args...]     (VENV / LEAN_VENV: paths to use other environment folders)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
LEAN_VENV="${LEAN_VENV:-.venv-lean}"

# The corpus generator's tests play SoundFonts with FluidSynth and sing with Festival's voices (small packages).
apt_packages=(libfluidsynth3 festival festvox-kallpc16k festvox-italp16k festvox-itapc16k festvox-czech-machac
    festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv)
missing=()
for package in "${apt_packages[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_get=(apt-get); [ "$(id -u)" -eq 0 ] || apt_get=(sudo apt-get)
    "${apt_get[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "${missing[@]}"
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
# The CPU build of torch first, so no extra below pulls a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[train,export,bench,openvino,peers,ray,dev]"
python -m ruff check .   # lint (pyproject.toml [tool.ruff]): imports, bugbear, pyupgrade, pyflakes
python -m ruff format --check .   # formatting, as `ruff format` writes it
python -m mypy   # types (pyproject.toml [tool.mypy]: runtime, export, train, bench)

if [ "$#" -gt 0 ]; then
    exec python -m pytest "$@"
fi
# The tiny bundles the runtime tests use are exported with torch: kept for the second run.
UNMIX_TEST_BUNDLES="$(mktemp -d)"
export UNMIX_TEST_BUNDLES
trap 'rm -rf "$UNMIX_TEST_BUNDLES"' EXIT
python -m pytest
deactivate

# The lean promise, as installed: the runtime's tests that need nothing but the runtime, run without torch.
[ -x "$LEAN_VENV/bin/python" ] || python3 -m venv "$LEAN_VENV"
. "$LEAN_VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[openvino,dev]"
if python -c "import torch" 2>/dev/null; then
    echo "the runtime's venv has torch: it would not test the lean install" >&2
    exit 1
fi
mapfile -t lean_tests < <(grep -L -E "^import torch|unmix\.(train|export|bench)|tiny_models" tests/test_runtime_*.py)
python -m pytest -q "${lean_tests[@]}"
