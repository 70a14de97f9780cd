#!/usr/bin/env bash
# The paper's Table 1 in miniature, at equal phase-1 and phase-2 steps, from the default model's runs:
#   (i)   phase 1 from the pretrained stand-in (the generic VQ-VAE): the default recipe's phase-1 runs, then phase 2
#   (ii)  phase 1 from scratch, then phase 2
#   (iii) the pretrained stand-in without phase-1 fine-tuning: phase 2 on the generic VQ-VAE directly
#   train/recipes/table1.sh DATA RUNS OUT      (RUNS: the folder default_model.sh trained into)
# PHASE1_STEPS must be the default runs' (so (ii) fine-tunes as long as (i) did); every variant then trains
# PHASE2_STEPS phase-2 steps with WARMUP warm-up steps. STEMS picks a subset (default: all four).
# Every run resumes when re-run. The scores land in OUT (unmix-bench sdr JSON, markdown and plot).
set -euo pipefail
DATA="${1:?data root}"; RUNS="${2:?runs folder of default_model.sh}"; OUT="${3:?report folder}"
PHASE1_STEPS="${PHASE1_STEPS:?phase-1 steps of the default runs}"; PHASE2_STEPS="${PHASE2_STEPS:?phase-2 steps of every variant}"
BATCH="${BATCH:-2}"; CHUNK="${CHUNK:-32768}"; DEVICE="${DEVICE:-auto}"; EMA_DECAY="${EMA_DECAY:-0.99}"; WARMUP="${WARMUP:-100}"
read -r -a STEMS <<< "${STEMS:-drums bass other vocals}"
common=(--data "$DATA" --batch "$BATCH" --chunk "$CHUNK" --device "$DEVICE" --workers 1 --no-progress --ema-decay "$EMA_DECAY"
        --val-songs "${VAL_SONGS:-4}" --val-chunks 2 --stats-chunks 16)

run() {  # run OUT STEPS COMMAND...: start, or resume when OUT already holds a checkpoint
  local out="$1" steps="$2"; shift 2
  local resume=(); [ -d "$out/checkpoint" ] && resume=(--resume)
  unmix-train "$@" --out "$out" --steps "$steps" --save-every 10 --val-every "${VAL_EVERY:-$steps}" "${resume[@]}" "${common[@]}"
}

finished() {  # finished RUN: its checkpoint has reached the steps it was asked for
  python - "$1" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
asked = json.loads((run / "options.json").read_text())["steps"]
done = json.loads((run / "checkpoint" / "config.json").read_text())["step"]
sys.exit(0 if done >= asked else f"{run}: at step {done} of {asked}; let default_model.sh finish it first")
PY
}

for stem in "${STEMS[@]}"; do
  finished "$RUNS/phase1-$stem"
  run "$RUNS/table1-pretrained/phase2-$stem" "$PHASE2_STEPS" phase2 --stem "$stem" --vqvae "$RUNS/phase1-$stem" --warmup "$WARMUP"
  run "$RUNS/table1-scratch/phase1-$stem" "$PHASE1_STEPS" phase1 --stem "$stem" --config paper
  run "$RUNS/table1-scratch/phase2-$stem" "$PHASE2_STEPS" phase2 --stem "$stem" --vqvae "$RUNS/table1-scratch/phase1-$stem" \
    --warmup "$WARMUP"
  finished "$RUNS/generic"
  run "$RUNS/table1-no-phase1/phase2-$stem" "$PHASE2_STEPS" phase2 --stem "$stem" --vqvae "$RUNS/generic" --warmup "$WARMUP"
done

# Every variant's phase-2 model in PyTorch on the test split (the baselines once), then one table.
stems="$(IFS=,; echo "${STEMS[*]}")"
mkdir -p "$OUT"
labels=()
for variant in "i-pretrained:$RUNS/table1-pretrained" "ii-scratch:$RUNS/table1-scratch" "iii-no-phase1:$RUNS/table1-no-phase1"; do
  label="${variant%%:*}"; folder="${variant#*:}"
  baselines=(--no-baselines); [ ${#labels[@]} -eq 0 ] && baselines=()
  unmix-bench sdr --data "$DATA" --bundle none --separator "$folder/phase2-{stem}" --stems "$stems" "${baselines[@]}" \
    --songs "${SONGS:-20}" --max-seconds "${SECONDS_PER_SONG:-30}" --json "$OUT/$label.json" --no-progress
  labels+=("$label=$OUT/$label.json")
done
unmix-bench compare "${labels[@]}" --out "$OUT/table1.md" \
  --title "Table 1 in miniature: phase 1 from the pretrained stand-in (i), from scratch (ii), none (iii)"
