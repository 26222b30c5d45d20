#!/usr/bin/env bash
# Multi-GPU training, both ways:
#   1. DataParallel in one process (--gpus 0,1): the simplest, as in the original project;
#   2. DistributedDataParallel with torchrun: one process per GPU, faster, and it spans nodes.
# Without CUDA the DataParallel part is skipped and torchrun runs two CPU processes (gloo backend).
#
#   bash examples/multi_gpu.sh
#   EPOCHS=1 MAX_STEPS=3 bash examples/multi_gpu.sh   # a smoke run
set -euo pipefail

WORK=${WORK:-multi_gpu}
EPOCHS=${EPOCHS:-10}
MAX_STEPS=${MAX_STEPS:-0}
DATA="$WORK/data"
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")

case "$WORK" in ""|"/"|"."|".."|"$HOME") echo "refusing to clear WORK=$WORK" >&2; exit 2;; esac
rm -rf "$WORK"
mkdir -p "$WORK"
resnet sample-data "$DATA" --quiet
resnet split "$DATA" --val 0.2 --seed 0 --quiet > /dev/null

if [ "$GPUS" -ge 1 ]; then
  IDS=$(python3 -c "print(','.join(map(str, range($GPUS))))")
  # DataParallel over every visible GPU; autocast runs inside each replica.
  resnet train --data "$DATA" --arch 50 --gpus "$IDS" --out "$WORK/runs/dp" --epochs "$EPOCHS" --max-steps "$MAX_STEPS"
  NPROC=$GPUS
else
  echo "no CUDA GPU: skipping DataParallel (--gpus); torchrun below uses 2 CPU processes" >&2
  NPROC=2
fi

# One node: one process per GPU (or 2 CPU processes). Only rank 0 writes files and prints.
OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node "$NPROC" -m resnet_cli train \
  --data "$DATA" --arch 50 --out "$WORK/runs/ddp" --epochs "$EPOCHS" --max-steps "$MAX_STEPS"

# Several nodes (run the same line on each, with --node-rank 0..N-1 and rank 0's address):
#   torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr 10.0.0.1 --master-port 29500 \
#     -m resnet_cli train --data /shared/data --arch 50 --out /shared/runs/r50
# Resume after a stop, with any number of processes (from an epoch-end checkpoint):
#   torchrun --standalone --nproc-per-node 4 -m resnet_cli train --resume --out "$WORK/runs/ddp" --epochs 20
