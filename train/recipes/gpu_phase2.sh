#!/usr/bin/env bash
# Phase 2 of the bundled model on a lent GPU for a fixed wall-clock time per stem, from the phase-1
# VQ-VAEs of the CPU run (train/recipes/default_model.sh), on a corpus carried by compact_corpus.py.
#   train/recipes/gpu_phase2.sh PACKED VQVAES RUNS SECONDS_PER_STEM
# PACKED: compact_corpus.py pack's folder; VQVAES/<stem>: each stem's phase-1 checkpoint folder.
# Sizes come from the environment: BATCH CHUNK REMIX EMA_DECAY WORKERS (defaults below); VAL_SONGS and
# VAL_EVERY hold songs out and score separation SDR on them every so many steps (the loss alone misled the
# first run: it kept falling while SDR hardly moved).
# Each stem trains until SIGINT at SECONDS_PER_STEM, which the trainer answers by saving its
# checkpoint (exit 130); a later call with the same RUNS resumes from there.
set -euo pipefail
PACKED="${1:?packed corpus}"; VQVAES="${2:?phase-1 checkpoints}"; RUNS="${3:?runs folder}"; SECONDS_PER_STEM="${4:?seconds}"
BATCH="${BATCH:-32}"; CHUNK="${CHUNK:-65536}"; REMIX="${REMIX:-0.5}"; EMA_DECAY="${EMA_DECAY:-0.99}"
WORKERS="${WORKERS:-12}"; VAL_SONGS="${VAL_SONGS:-0}"; VAL_EVERY="${VAL_EVERY:-0}"; DATA="${DATA:-/tmp/unmix-corpus}"
mkdir -p "$RUNS"
[ -d "$DATA" ] || python train/recipes/compact_corpus.py unpack "$PACKED" "$DATA"
read -r device gpu < <(python -c 'import torch; c = torch.cuda.is_available(); print("cuda" if c else "cpu", torch.cuda.get_device_name(0) if c else "no GPU")')

for stem in drums bass other vocals; do
  out="$RUNS/phase2-$stem"; resume=(); [ -d "$out/checkpoint" ] && resume=(--resume)
  started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; start="$SECONDS"
  status=0
  timeout --preserve-status -s INT "$SECONDS_PER_STEM" python -m unmix.train.cli phase2 --data "$DATA" --out "$out" --stem "$stem" \
    --vqvae "unmix:$VQVAES/$stem" --steps 1000000 --batch "$BATCH" --chunk "$CHUNK" --remix "$REMIX" \
    --ema-decay "$EMA_DECAY" --val-songs "$VAL_SONGS" --val-every "$VAL_EVERY" --save-every 500 --workers "$WORKERS" --no-progress \
    "${resume[@]}" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 130 ] || { echo "phase 2 of $stem failed ($status)" >&2; continue; }
  steps="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' "$out/checkpoint/config.json")"
  printf '{"stage": "%s", "steps": %d, "started": "%s", "seconds": %d, "device": "%s", "machine": "%s", "command": "%s"}\n' \
    "phase2-$stem" "$steps" "$started" "$((SECONDS - start))" "$device" "$gpu" \
    "gpu_phase2.sh: batch $BATCH x $CHUNK, remix $REMIX, EMA $EMA_DECAY, bf16 autocast, $SECONDS_PER_STEM s" >> "$RUNS/stages.jsonl"
done
