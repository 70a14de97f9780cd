#!/usr/bin/env bash
# Render our own varied corpus (`unmix-train corpus`, `unmix.train.corpus`): a training corpus from the training
# pool, and a validation corpus from the held-out pool, which shares no SoundFont, singer or style with it, for
# `unmix-train phase1/phase2 --val-data`.
#   train/recipes/varied_corpus.sh [TRAIN_ROOT] [HELD_OUT_ROOT] [SONGS]
# Needs apt: libfluidsynth3 fluid-soundfont-gm opl3-soundfont musescore-general-soundfont(-small) festival and the
# festvox voices the pools name (scripts/test.sh installs the voices). 30 s songs render at about 4 per 10 s on 2 cores.
set -euo pipefail
TRAIN_ROOT="${1:-data/varied}"
HELD_OUT_ROOT="${2:-data/heldout}"
SONGS="${3:-200}"
unmix-train corpus "$TRAIN_ROOT" --split train --songs "$SONGS" --seconds 30 --seed 1
unmix-train corpus "$TRAIN_ROOT" --split test --songs 20 --seconds 30 --seed 2
unmix-train corpus "$HELD_OUT_ROOT" --split test --pool held-out --songs 12 --seconds 30 --seed 11 --prefix HeldOut
# For a lent GPU (64 MiB of carry): compact_corpus.py pack "$TRAIN_ROOT" PACKED --max-mb 50 (about 0.5 MB a song)
# and compact_corpus.py pack "$HELD_OUT_ROOT" VAL_PACKED --split test, then VAL_PACKED=... gpu_train.sh PACKED ...
