#!/usr/bin/env bash
# Fine-tune from a torchvision (or timm) state-dict file with --init: keys match this project's models,
# so no mapping is needed; the 1000-class classifier is replaced by one for your classes.
#
#   bash examples/finetune_from_torchvision.sh /path/to/resnet34-b627a593.pth
# Nothing is downloaded. Without an argument the script writes a randomly initialised torchvision
# ResNet-34 state dict, which shows the mechanics (not the accuracy gain of pretrained weights).
#   EPOCHS=1 MAX_STEPS=3 bash examples/finetune_from_torchvision.sh   # a smoke run
set -euo pipefail

WORK=${WORK:-finetune}
EPOCHS=${EPOCHS:-10}
MAX_STEPS=${MAX_STEPS:-0}
WEIGHTS=${1:-}
DATA="$WORK/data"

case "$WORK" in ""|"/"|"."|".."|"$HOME") echo "refusing to clear WORK=$WORK" >&2; exit 2;; esac
rm -rf "$WORK"
mkdir -p "$WORK"
if [ -z "$WEIGHTS" ]; then
  WEIGHTS="$WORK/torchvision_resnet34.pth"
  python3 -c "import sys, torch, torchvision; torch.save(torchvision.models.resnet34().state_dict(), sys.argv[1])" "$WEIGHTS"
  echo "wrote a randomly initialised torchvision state dict: $WEIGHTS" >&2
fi

resnet sample-data "$DATA" --quiet
resnet split "$DATA" --val 0.2 --seed 0 --quiet > /dev/null

# ImageNet weights expect the standard 7x7 stem and three channels: upsample the 8 px digits to 32 px
# and read them as RGB. (A greyscale --in-channels 1 run would sum the first convolution over RGB instead.)
resnet train --data "$DATA" --arch 34 --init "$WEIGHTS" --image-size 32 --no-small-input --in-channels 3 \
  --augment crop --lr 3e-4 --out "$WORK/runs/r34-ft" --epochs "$EPOCHS" --max-steps "$MAX_STEPS"
