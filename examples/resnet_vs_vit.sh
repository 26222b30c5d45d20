#!/usr/bin/env bash
# ResNet against a parameter-matched ViT on the real handwritten digits, over seeds and data sizes:
# ResNet-34 (21.3 M parameters with the small-input stem) against ViT-S/4 (21.7 M), 3 seeds x 3 nested,
# stratified fractions of the train part, every run evaluated on the held-out test part, then the report
# (mean, std and 95% CI over seeds; paired differences) and its figures.
#
#   bash examples/resnet_vs_vit.sh        # about 20 minutes on 2 CPU cores
#   WORK=/tmp/rv SEEDS=1 FRACTIONS=1 EPOCHS=1 MAX_STEPS=2 bash examples/resnet_vs_vit.sh   # a smoke run
#
# Rerun it after an interruption: finished runs are kept, an interrupted one resumes from its last.pt.
set -euo pipefail

WORK=${WORK:-study-demo}              # data and study live here; rerunning continues the study
SEEDS=${SEEDS:-3}
FRACTIONS=${FRACTIONS:-0.25,0.5,1}
EPOCHS=${EPOCHS:-20}
MAX_STEPS=${MAX_STEPS:-0}             # cap on steps per epoch (0: none); for smoke runs only

mkdir -p "$WORK"
if [ ! -f "$WORK/data/manifest.csv" ]; then
    resnet sample-data "$WORK/data" --quiet                                      # 1,797 real 8x8 scans
    resnet split "$WORK/data" --val 0.15 --test 0.15 --seed 0 --quiet            # fixed val and test parts
fi

# Both families take their own recipe defaults (ResNet: AdamW + plateau; ViT: DeiT's, with MixUp, CutMix,
# RandAugment, drop path and a cosine schedule); the epoch budget, data, split and preprocessing are shared.
resnet study "$WORK/study" --data "$WORK/data" --arch 34 --arch vit-s/4 \
    --seeds "$SEEDS" --fractions "$FRACTIONS" --epochs "$EPOCHS" --max-steps "$MAX_STEPS"

resnet plot "$WORK/study"                 # mean curves ± std, accuracy and gap against the fraction, reliability
echo "report: $WORK/study/report.md"
