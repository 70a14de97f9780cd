#!/usr/bin/env bash
# Render a validation corpus from material the training corpus never uses, for `unmix-train --val-data`.
# Every stem's instruments come from another General MIDI SoundFont (MuseScore General, Debian's
# musescore-general-soundfont-small) and the vocals from its voice presets, not the training corpus's
# FluidR3_GM and kal_diphone. The song generator (grooves, forms, keys, mixing) is the training corpus's own, so
# this measures timbre generalisation, not style. Needs the generator from the team's shared folder:
#   DATAGEN=../shared/datagen train/recipes/unseen_corpus.sh [ROOT] [SONGS]
# Never render it from the external evaluation's reserved material (TimGM6mb, the AVL kits, Festival's ked voice,
# the planetblupi MIDI songs, music21's chorales).
set -euo pipefail
DATAGEN="${DATAGEN:?set DATAGEN to the datagen folder (make_corpus.py)}"
ROOT="${1:-data/unseen}"
SONGS="${2:-12}"
SOUNDFONT="${SOUNDFONT:-/usr/share/sounds/sf3/MuseScore_General_Lite.sf3}"
if [ ! -f "$SOUNDFONT" ]; then
    echo "no $SOUNDFONT: apt-get install musescore-general-soundfont-small (or set SOUNDFONT)" >&2
    exit 2
fi
python "$DATAGEN/make_corpus.py" --root "$ROOT" --subset test --n "$SONGS" --seconds 30 --seed 11 \
    --soundfont "$SOUNDFONT" --vocals gm --prefix Unseen --workers 2
python "$DATAGEN/verify_corpus.py" "$ROOT"
