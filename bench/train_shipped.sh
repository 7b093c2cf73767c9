#!/usr/bin/env bash
# Reproduces the shipped model and the stored scheduler curves on a 2-core CPU (several hours).
# Each step can be stopped and continued: rerun the same line with --resume added.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON="--arch digitnet_fpn --weights none --batch-size 16 --lr 1e-3 --weight-decay 5e-4 --warmup-steps 300 --clip-grad-norm 10 --seed 0"

# 1. Data: 50,000 training, 1,000 validation and 2,000 held-out test images.
[ -f data/synth50k/train.json ] || $PY -m core.synth --out data/synth50k --train 50000 --valid 1000 --test 2000 --seed 1 --workers 2

# 2. The default model: 30 epochs of 5,000 fresh images each, cosine schedule.
[ -f runs/default-cosine/history.json ] || $PY -m core.train --data data/synth50k --out runs/default-cosine $COMMON \
    --epochs 30 --subset-fraction 0.1 --scheduler cosine

# 3. The scheduler comparison: the same configuration twice, 12 epochs of 2,500 images, only the scheduler differs.
for sched in cosine step; do
  [ -f runs/sched-$sched/history.json ] || $PY -m core.train --data data/synth50k --out runs/sched-$sched $COMMON \
      --epochs 12 --subset-fraction 0.05 --scheduler $sched
done
