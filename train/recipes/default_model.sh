#!/usr/bin/env bash
# The bundled model's recipe, the paper's way: a generic level-0 VQ-VAE on mixtures and all stems (our
# stand-in for Jukebox's pretrained VQ-VAE), phase 1 per stem from it, phase 2 per stem, then export.
#   train/recipes/default_model.sh DATA RUNS BUNDLE
# Sizes come from the environment so the same recipe runs briefly on a CPU or fully on a GPU:
#   GENERIC_STEPS PHASE1_STEPS PHASE2_STEPS BATCH CHUNK DEVICE EMA_DECAY VAL_EVERY (defaults: the shipped
#   bundle's 2-hour run on a 2-core CPU, train/results/cpu-run; the paper's weight-average decay 0.9995 needs
#   thousands of steps, so a short run averages faster)
# Every stage resumes when re-run (a stopped run continues where its last checkpoint left it).
set -euo pipefail
DATA="${1:?data root}"; RUNS="${2:?runs folder}"; BUNDLE="${3:?bundle folder}"
GENERIC_STEPS="${GENERIC_STEPS:-500}"; PHASE1_STEPS="${PHASE1_STEPS:-200}"; PHASE2_STEPS="${PHASE2_STEPS:-400}"
BATCH="${BATCH:-2}"; CHUNK="${CHUNK:-32768}"; DEVICE="${DEVICE:-auto}"; EMA_DECAY="${EMA_DECAY:-0.99}"
STEMS=(drums bass other vocals)
common=(--data "$DATA" --batch "$BATCH" --chunk "$CHUNK" --device "$DEVICE" --workers 1 --no-progress --ema-decay "$EMA_DECAY"
        --val-songs "${VAL_SONGS:-4}" --val-chunks 2 --stats-chunks 16)

# What trained, where and for how long goes into the bundle's provenance: one line per stage run in
# RUNS/stages.jsonl (a resumed stage adds a line).
machine="$(python -c 'import platform, os, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"{platform.processor() or platform.machine()} {os.cpu_count()} cores, {gpu}")')"
cpu="$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs || true)"
mkdir -p "$RUNS"

run() {  # run OUT STEPS COMMAND...: start, or resume when OUT already holds a checkpoint
  local out="$1" steps="$2"; shift 2
  local resume=(); [ -d "$out/checkpoint" ] && resume=(--resume)
  local started="$(date -u +%Y-%m-%dT%H:%M:%SZ)" start="$SECONDS"
  unmix-train "$@" --out "$out" --steps "$steps" --save-every 10 --val-every "${VAL_EVERY:-100}" "${resume[@]}" "${common[@]}"
  printf '{"stage": "%s", "steps": %d, "started": "%s", "seconds": %d, "device": "%s", "machine": "%s; %s", "command": "unmix-train %s"}\n' \
    "$(basename "$out")" "$steps" "$started" "$((SECONDS - start))" "$DEVICE" "${cpu:-unknown CPU}" "$machine" "$*" >> "$RUNS/stages.jsonl"
}

run "$RUNS/generic" "$GENERIC_STEPS" phase1 --stem all --config paper
# One stem at a time, so each stem's separation SDR is known as early as possible.
for stem in "${STEMS[@]}"; do
  run "$RUNS/phase1-$stem" "$PHASE1_STEPS" phase1 --stem "$stem" --init "unmix:$RUNS/generic/checkpoint"
  run "$RUNS/phase2-$stem" "$PHASE2_STEPS" phase2 --stem "$stem" --vqvae "$RUNS/phase1-$stem"
done
# The shipped bundle stays under 25 MB: fp32 and int8, without ONNX Runtime's offline-optimised copies
# (sessions optimise at load anyway; the copies only shorten start-up).
unmix-export --stems all --checkpoint "$RUNS/phase2-{stem}" --audio "$DATA" --int8 --calibration "$DATA" --no-ort-optimized \
  --overwrite -o "$BUNDLE" --attach "training_stages=$RUNS/stages.jsonl" \
  --note "trained by train/recipes/default_model.sh on $DATA: generic VQ-VAE $GENERIC_STEPS steps, then per stem phase 1 $PHASE1_STEPS and phase 2 $PHASE2_STEPS steps, batch $BATCH x $CHUNK samples, parameter EMA $EMA_DECAY; ${cpu:-unknown CPU}; $machine${NOTE:+; $NOTE}"
