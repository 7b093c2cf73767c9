#!/usr/bin/env bash
# Trains the shipped model and the stored scheduler curves on a 2-core CPU (about 3.5 hours),
# then exports checkpoints/default.pt and copies the curves to checkpoints/curves/.
# Run it again after an interruption: finished steps are skipped, interrupted runs resume.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=data/synth50k-v2
# A run is finished when its log ends with a completed "end" event; an interrupted one
# (last.pt present) continues with --resume.
finished() { [ -f "$1/log.jsonl" ] && tail -n 1 "$1/log.jsonl" | grep -q '"status": "completed"'; }
resume() { [ -f "$1/last.pt" ] && echo --resume || true; }
COMMON="--arch digitnet_fpn --weights none --batch-size 16 --lr 1e-3 --weight-decay 5e-4 --warmup-steps 300 --clip-grad-norm 10 --seed 0"

# 1. Data: 50,000 training, 1,000 validation and 2,000 held-out test images (generator v2).
[ -f $DATA/train.json ] || $PY -m core.synth --out $DATA --train 50000 --valid 1000 --test 2000 --seed 1 --workers 2

# 2. The default model: 30 epochs of 5,000 fresh images each, cosine schedule.
finished runs/default-cosine || $PY -m core.train --data $DATA --out runs/default-cosine $(resume runs/default-cosine) $COMMON \
    --epochs 30 --subset-fraction 0.1 --scheduler cosine

# 3. Task 2 threshold from the validation split, held-out test scores, export (float16, inference only).
$PY -m core.evaluate --ckpt runs/default-cosine/best.pt --data $DATA --split valid --sweep-task2 \
    --json runs/default-cosine/valid-metrics.json
T=$($PY -c "import json; print(json.load(open('runs/default-cosine/valid-metrics.json'))['task2_best_threshold'])")
$PY -m core.evaluate --ckpt runs/default-cosine/best.pt --data $DATA --split test --task2-threshold "$T" \
    --json runs/default-cosine/test-metrics.json
$PY -m core.checkpoint export runs/default-cosine/best.pt checkpoints/default.pt --task2-threshold "$T" \
    --metrics-json runs/default-cosine/test-metrics.json

# 4. The scheduler comparison: the same configuration twice, 12 epochs of 2,500 images,
#    same seed and therefore the same per-epoch subsets; only the scheduler differs.
for sched in cosine step; do
  finished runs/sched-$sched || $PY -m core.train --data $DATA --out runs/sched-$sched $(resume runs/sched-$sched) $COMMON \
      --epochs 12 --subset-fraction 0.05 --scheduler $sched
  mkdir -p checkpoints/curves/$sched
  cp runs/sched-$sched/config.json runs/sched-$sched/history.json checkpoints/curves/$sched/
done
