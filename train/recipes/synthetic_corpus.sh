#!/usr/bin/env bash
# Render the synthetic MUSDB18-HQ-layout corpus the bundled model is trained and scored on.
# Needs the generator from the team's shared folder (its README lists the apt and pip packages):
#   DATAGEN=../shared/datagen train/recipes/synthetic_corpus.sh [ROOT]
set -euo pipefail
DATAGEN="${DATAGEN:?set DATAGEN to the datagen folder (make_corpus.py)}"
ROOT="${1:-data/synth}"
python "$DATAGEN/make_corpus.py" --root "$ROOT" --subset train --n 100 --seconds 30 --seed 1 --workers 2
python "$DATAGEN/make_corpus.py" --root "$ROOT" --subset test --n 20 --seconds 30 --seed 2 --workers 2
python "$DATAGEN/verify_corpus.py" "$ROOT"
