#!/usr/bin/env bash
# End-to-end check of unmix-export on a tiny model: train a generic tiny VQ-VAE (phase 1, all sources) and
# one mixture encoder per stem (phase 2) for a few steps, then export the four stems with parity, int8
# (calibrated on the corpus' mixtures), fp16 and a fused graph. The model is barely trained: the point
# is the pipeline and the parity report, not the separation quality.
#
#   scripts/export_demo.sh [DATA_ROOT (MUSDB layout, default data/synth)] [OUT (default scratch/export-demo)]
#   STEPS=10 by default; the bundle and its parity.md end up in OUT/bundle.
set -euo pipefail
DATA=${1:-data/synth}
OUT=${2:-scratch/export-demo}
STEPS=${STEPS:-10}
common=(--data "$DATA" --steps "$STEPS" --batch 2 --chunk 8192 --save-every 0 --val-every 0 --device cpu --no-progress)

[ -f "$OUT/runs/phase1-all/checkpoint/model.safetensors" ] ||
  unmix-train phase1 --stem all --config tiny --out "$OUT/runs/phase1-all" "${common[@]}"
for stem in drums bass other vocals; do
  [ -f "$OUT/runs/phase2-$stem/checkpoint/model.safetensors" ] ||
    unmix-train phase2 --stem "$stem" --vqvae "$OUT/runs/phase1-all" --out "$OUT/runs/phase2-$stem" "${common[@]}"
done
unmix-export --stems all --checkpoint "$OUT/runs/phase2-{stem}" -o "$OUT/bundle" --overwrite \
  --audio "$DATA" --int8 --calibration "$DATA" --fp16 --fused \
  --note "scripts/export_demo.sh: tiny model trained for $STEPS steps per phase on $DATA (pipeline check, not a usable separator)"
