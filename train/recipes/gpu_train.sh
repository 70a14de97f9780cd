#!/usr/bin/env bash
# The bundled model's per-stem stages on a lent GPU, each for a fixed wall-clock time: phase 1 (SE + SD
# fine-tuned on the stem, from VQVAES/<stem>) and then phase 2 (ME, from that VQ-VAE), on a corpus carried by
# compact_corpus.py.
#   train/recipes/gpu_train.sh PACKED VQVAES RUNS PHASE1_SECONDS PHASE2_SECONDS
# PACKED: compact_corpus.py pack's folder; VQVAES/<stem>: each stem's starting VQ-VAE (unmix checkpoint folder).
# PHASE1_SECONDS 0 skips phase 1, and phase 2 starts from VQVAES/<stem> as it is.
# Sizes come from the environment: BATCH CHUNK (phase 2), PHASE1_BATCH, LR REMIX EMA_DECAY WARMUP WORKERS (defaults
# below); VAL_SONGS and VAL_EVERY hold songs out and score them every so many steps (phase 2's embedding loss
# alone misled the first run: it kept falling while SDR hardly moved). ME_INIT/<stem>, when set, is a phase-2
# checkpoint (or its `encoders.0.*` weights alone) whose ME a new phase-2 run starts from, instead of SE.
# VAL_PACKED, when set, is a compact_corpus.py pack of a held-out validation corpus (varied_corpus.sh's, `--split
# test`), scored beside the held-out songs at every validation (`--val-data`: val_unseen_* in metrics.jsonl).
# PARALLEL=1 trains the four stems at once, each for the whole time: the GPU is as busy either way (692x real
# time for four stems at batch 16, 750x for one at batch 64), but the stems' start-ups and saves overlap.
# Each stage stops on SIGINT at its time, which the trainer answers by saving its checkpoint (exit 130); a later
# call with the same RUNS resumes every stage from there.
set -euo pipefail
PACKED="${1:?packed corpus}"; VQVAES="${2:?starting VQ-VAEs}"; RUNS="${3:?runs folder}"
PHASE1_SECONDS="${4:?phase-1 seconds per stem}"; PHASE2_SECONDS="${5:?phase-2 seconds per stem}"
BATCH="${BATCH:-64}"; CHUNK="${CHUNK:-65536}"; PHASE1_BATCH="${PHASE1_BATCH:-32}"; LR="${LR:-3e-4}"; REMIX="${REMIX:-0.5}"
EMA_DECAY="${EMA_DECAY:-0.99}"; WARMUP="${WARMUP:-100}"; WORKERS="${WORKERS:-12}"
VAL_SONGS="${VAL_SONGS:-0}"; VAL_EVERY="${VAL_EVERY:-0}"; DATA="${DATA:-/tmp/unmix-corpus}"
ME_INIT="${ME_INIT:-}"; PARALLEL="${PARALLEL:-0}"; VAL_PACKED="${VAL_PACKED:-}"; VAL_DATA="${VAL_DATA:-/tmp/unmix-heldout}"
mkdir -p "$RUNS"
[ -d "$DATA" ] || python train/recipes/compact_corpus.py unpack "$PACKED" "$DATA"
val=()
if [ -n "$VAL_PACKED" ]; then
  [ -d "$VAL_DATA" ] || python train/recipes/compact_corpus.py unpack "$VAL_PACKED" "$VAL_DATA"
  val=(--val-data "$VAL_DATA")
fi
read -r device gpu < <(python -c 'import torch; c = torch.cuda.is_available(); print("cuda" if c else "cpu", torch.cuda.get_device_name(0) if c else "no GPU")')
precision="$([ "$device" = cuda ] && echo "bf16 autocast" || echo fp32)"

stage() {  # stage NAME SECONDS BATCH COMMAND...: train RUNS/NAME (resuming its checkpoint) until SIGINT at SECONDS
  local name="$1" seconds="$2" batch="$3"; shift 3
  local out="$RUNS/$name" resume=() status=0 started start steps
  [ -d "$out/checkpoint" ] && resume=(--resume)
  started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; start="$SECONDS"
  timeout --preserve-status -s INT "$seconds" python -m unmix.train.cli "$@" --data "$DATA" --out "$out" --steps 1000000 \
    --batch "$batch" --chunk "$CHUNK" --lr "$LR" --remix "$REMIX" --ema-decay "$EMA_DECAY" --warmup "$WARMUP" --val-songs "$VAL_SONGS" \
    --val-every "$VAL_EVERY" --save-every 500 --workers "$WORKERS" --no-progress "${val[@]}" "${resume[@]}" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 130 ] || { echo "$name failed ($status)" >&2; return 1; }
  steps="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' "$out/checkpoint/config.json")"
  printf '{"stage": "%s", "steps": %d, "started": "%s", "seconds": %d, "device": "%s", "machine": "%s", "command": "%s"}\n' \
    "$name" "$steps" "$started" "$((SECONDS - start))" "$device" "$gpu" \
    "gpu_train.sh: unmix-train $1, batch $batch x $CHUNK, lr $LR, remix $REMIX, EMA $EMA_DECAY, warm-up $WARMUP, $precision, $seconds s" \
    >> "$RUNS/stages.jsonl"
}

train_stem() {  # train_stem STEM: phase 1 (unless skipped), then phase 2
  local stem="$1" vqvae="unmix:$VQVAES/$1" init=()
  if [ "$PHASE1_SECONDS" -gt 0 ]; then
    stage "phase1-$stem" "$PHASE1_SECONDS" "$PHASE1_BATCH" phase1 --stem "$stem" --init "$vqvae" || return 0
    vqvae="$RUNS/phase1-$stem"
  fi
  [ -n "$ME_INIT" ] && init=(--init "unmix:$ME_INIT/$stem")
  stage "phase2-$stem" "$PHASE2_SECONDS" "$BATCH" phase2 --stem "$stem" --vqvae "$vqvae" "${init[@]}" || true
}

for stem in drums bass other vocals; do
  if [ "$PARALLEL" = 1 ]; then train_stem "$stem" > "$RUNS/$stem.log" 2>&1 & else train_stem "$stem"; fi
done
wait
