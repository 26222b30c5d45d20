#!/usr/bin/env bash
# ResNet-34 (basic blocks) against ResNet-50 (bottlenecks) on the same split, curves overlaid:
# the comparison of training behaviour and overfitting this project exists for.
#
#   bash examples/compare_r34_r50.sh                 # about 15 minutes on a 2-core CPU
#   EPOCHS=1 MAX_STEPS=3 bash examples/compare_r34_r50.sh   # a smoke run
set -euo pipefail

WORK=${WORK:-compare}
EPOCHS=${EPOCHS:-30}
MAX_STEPS=${MAX_STEPS:-0}
DATA="$WORK/data"

case "$WORK" in ""|"/"|"."|".."|"$HOME") echo "refusing to clear WORK=$WORK" >&2; exit 2;; esac
rm -rf "$WORK"
mkdir -p "$WORK"
resnet sample-data "$DATA" --quiet
resnet split "$DATA" --val 0.15 --test 0.15 --seed 0 --quiet > /dev/null

for ARCH in 34 50; do
  # Same data, seed, schedule and stopping rule: only the architecture differs.
  resnet train --data "$DATA" --arch "$ARCH" --out "$WORK/runs/r$ARCH" --epochs "$EPOCHS" \
    --lr-patience 2 --label-smoothing 0.1 --seed 0 --max-steps "$MAX_STEPS" > /dev/null
  resnet eval "$WORK/runs/r$ARCH" --split test --quiet > /dev/null
done

resnet summary --arch 34 --depth 1 --image-size 8 --small-input --in-channels 1 --num-classes 10 | tail -n 1
resnet summary --arch 50 --depth 1 --image-size 8 --small-input --in-channels 1 --num-classes 10 | tail -n 1
for ARCH in 34 50; do
  python3 - "$WORK/runs/r$ARCH" <<'PY'
import json, sys
run = json.load(open(f"{sys.argv[1]}/run.json"))
test = json.load(open(f"{sys.argv[1]}/eval-test.json"))
print(f"{sys.argv[1]}: {run['epochs_run']} epochs ({run['stop_reason']}), best val loss {run['best_val_loss']:.4f} "
      f"at epoch {run['best_epoch']}, test accuracy {test['top1']:.2%}")
PY
done
resnet plot "$WORK/runs/r34" "$WORK/runs/r50" --out "$WORK/r34_vs_r50.png"
