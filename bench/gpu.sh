#!/usr/bin/env bash
# One GPU session: train the default model, then run the speed benchmark.
# Run from the repository root on a machine with a CUDA GPU:
#   OUT=/some/folder bash bench/gpu.sh
# SPEED_ONLY=1 skips training and times the shipped default, with and without --tta
# (about 4 min). FEED=1 then also times training fed by on-the-fly drawing, with
# data.echo 1 and 4 (issue 19; about 4 min more): samples_per_s lands in $OUT/feed.txt.
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
if [ -n "${FEED:-}" ]; then
  # 960x540 phantoms drawn on by the DataLoader's workers, as the default recipe draws.
  : > "$OUT/feed.txt"
  "$PY" -m annot_denoise phantoms "$OUT/feed-scans" --count 64 --height 540 --width 960 \
    --color --seed 3 --workers 14 > /dev/null \
    || { echo "phantoms failed" >> "$OUT/feed.txt"; exit 1; }
  for ECHO in 1 4; do
    rm -rf "$OUT/feed-echo$ECHO"
    timeout 150 "$PY" -m annot_denoise train examples/default-model-real-focus.yaml \
      --device cuda --no-progress --set data.clean_dir="$OUT/feed-scans" \
      --set data.echo=$ECHO --set data.repeats=64 --set model.init=null \
      --set train.batch_size=64 --set train.workers=15 --set train.max_minutes=null \
      --set train.epochs=2 --set train.samples=0 --set output.tensorboard=false \
      --set output.dir="$OUT/feed-echo$ECHO" > "$OUT/feed-echo$ECHO.log" 2>&1
    RC=$?
    LAST=$(tail -n 1 "$OUT/feed-echo$ECHO/metrics.jsonl" 2>/dev/null || echo "no metrics")
    echo "echo $ECHO (exit $RC): $LAST" >> "$OUT/feed.txt"
  done
fi
