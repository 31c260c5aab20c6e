#!/usr/bin/env bash
# One GPU session: train the default model, then run the speed benchmark.
# Run from the repository root on a machine with a CUDA GPU:
#   OUT=/some/folder bash bench/gpu.sh
# SPEED_ONLY=1 skips training and times the shipped default, with and without --tta
# (about 4 min).
# Results land in $OUT (default-model run files, speed section, logs).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
MODEL=annot_denoise/weights/default.pt
if [ -z "${SPEED_ONLY:-}" ]; then
  "$PY" -m annot_denoise phantoms data/default-phantoms --count 600 --varied --seed 0 --workers 14
  "$PY" -m annot_denoise train examples/default-model.yaml --device cuda --no-progress \
    --set output.dir=runs/default-model > "$OUT/train.log" 2>&1
  cp runs/default-model/best.pt "$OUT/default.pt"
  cp runs/default-model/metrics.jsonl runs/default-model/config.yaml "$OUT/"
  MODEL=runs/default-model/best.pt
fi
timeout 300 "$PY" bench/speed.py --device cuda --images 200 --batch 16 --workers 8 \
  --model "$MODEL" --tta --results "$OUT/speed.md" > "$OUT/speed.log" 2>&1
echo "speed exit: $?" >> "$OUT/speed.log"
