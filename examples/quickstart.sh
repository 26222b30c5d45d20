#!/usr/bin/env bash
# The quick start: scanned handwritten digits from files to exported weights, with the real commands.
#
#   bash examples/quickstart.sh            # about 5 minutes on a 2-core laptop CPU
#   WORK=/tmp/qs EPOCHS=2 MAX_STEPS=5 bash examples/quickstart.sh   # a smoke run
set -euo pipefail

WORK=${WORK:-demo}           # everything this script writes goes here
EPOCHS=${EPOCHS:-30}         # early stopping usually ends the run sooner
MAX_STEPS=${MAX_STEPS:-0}    # cap on steps per epoch (0: none); for smoke runs only

case "$WORK" in ""|"/"|"."|".."|"$HOME") echo "refusing to clear WORK=$WORK" >&2; exit 2;; esac
rm -rf "$WORK"               # the demo folder is this script's own scratch space
mkdir -p "$WORK"

# 1. Data: 1,797 real 8x8 scans shipped with scikit-learn, written as DATA/<digit>/<file>.png.
resnet sample-data "$WORK/data"

# 2. A seeded, stratified 70/15/15 split; the manifest lands in DATA/manifest.csv.
resnet split "$WORK/data" --val 0.15 --test 0.15 --seed 0

# 3. ResNet-34 from scratch. Image size, greyscale input and the small-input stem are read off the data.
RUN=$(resnet train --data "$WORK/data" --arch 34 --out "$WORK/runs/r34" --epochs "$EPOCHS" \
      --lr-patience 2 --label-smoothing 0.1 --max-steps "$MAX_STEPS")

# 4. The held-out test part: per-class report, confusion matrix, per-image predictions.
resnet eval "$RUN" --split test
REPORT="$RUN/eval-test.json"

# 5. Learning curves (and the confusion matrix, now that an eval report exists).
PLOTS=$(resnet plot "$RUN")

# 6. Portable weights: safetensors with the architecture, classes and preprocessing inside.
WEIGHTS=$(resnet export "$RUN")

# 7. Predictions for five test images, straight from the exported file.
mapfile -t IMAGES < <(awk -F, -v root="$WORK/data" '$3 == "test" {print root "/" $1}' "$WORK/data/manifest.csv" | head -n 5)
resnet predict "$WORK/runs/r34/model.safetensors" "${IMAGES[@]}" --top-k 3

python3 - "$REPORT" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"\ntest accuracy {report['top1']:.2%} on {report['images']} held-out digits (target: at least 98%)")
PY
echo "learning curves:  $(echo "$PLOTS" | head -n 1)"
echo "confusion matrix: $(echo "$PLOTS" | tail -n 1)"
echo "exported weights: $WEIGHTS"
