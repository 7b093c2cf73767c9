#!/usr/bin/env bash
# Trains the shipped model and the stored scheduler curves on a 2-core CPU (about 7 hours),
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

# 2. The v2 model (the shipped model until generator v3): 30 epochs of 5,000 fresh images each, cosine schedule.
finished runs/default-cosine || $PY -m core.train --data $DATA --out runs/default-cosine $(resume runs/default-cosine) $COMMON \
    --epochs 30 --subset-fraction 0.1 --scheduler cosine

# 3. Generator v3 (SVHN boxes, scenes, padding, border digits): 60,000 training, 1,000 validation, 2,000 test,
#    and a fresh-seed test split that shares nothing with the training data's seed.
V3=data/synth60k-v3
[ -f $V3/train.json ] || $PY -m core.synth --out $V3 --train 60000 --valid 1000 --test 2000 --seed 3 --workers 2
[ -f data/synth-v3-seed7/test.json ] || $PY -m core.synth --out data/synth-v3-seed7 --train 0 --valid 0 --test 2000 --seed 7 --workers 2

# 4. The shipped model: the v2 model fine-tuned on v3 data with the auto input size, 16 epochs of 5,000 images.
#    (The shipped file was fine-tuned from the float16 export of the v2 model; this uses its float32 best.pt.)
finished runs/v3-finetune || $PY -m core.train --data $V3 --out runs/v3-finetune $(resume runs/v3-finetune) \
    --arch digitnet_fpn --weights runs/default-cosine/best.pt --batch-size 16 --lr 5e-4 --weight-decay 5e-4 \
    --warmup-steps 200 --clip-grad-norm 10 --seed 0 --epochs 16 --subset-fraction 0.0834 --scheduler cosine

# 5. Generator v4 (unlabelled letters beside numbers, crops of words, more digit-free scenes): the v3 model
#    (exported as checkpoints/default.pt at revision 0cb3cda, which step 4 reproduces) fine-tuned 12 epochs.
#    (The run was started with --epochs 20 and resumed at epoch 4 with --epochs 12, which re-anneals the cosine.)
V4=data/synth60k-v4
[ -f $V4/train.json ] || $PY -m core.synth --out $V4 --train 60000 --valid 1000 --test 2000 --seed 4 --workers 2
[ -f data/synth-v4-seed7/test.json ] || $PY -m core.synth --out data/synth-v4-seed7 --train 0 --valid 0 --test 2000 --seed 7 --workers 2
[ -f runs/v3-export.pt ] || $PY -m core.checkpoint export runs/v3-finetune/best.pt runs/v3-export.pt
finished runs/v4-finetune || $PY -m core.train --data $V4 --out runs/v4-finetune $(resume runs/v4-finetune) \
    --arch digitnet_fpn --weights runs/v3-export.pt --batch-size 16 --lr 3e-4 --weight-decay 5e-4 \
    --warmup-steps 100 --clip-grad-norm 10 --seed 0 --epochs 12 --subset-fraction 0.0834 --scheduler cosine

# 6. Task 2 threshold from the synthetic validation split, held-out test scores, export (float16, inference only).
$PY -m core.evaluate --ckpt runs/v4-finetune/best.pt --data $V4 --split valid --sweep-task2 \
    --json runs/v4-finetune/valid-metrics.json
T=$($PY -c "import json; print(json.load(open('runs/v4-finetune/valid-metrics.json'))['task2_best_threshold'])")
$PY -m core.evaluate --ckpt runs/v4-finetune/best.pt --data data/synth-v4-seed7 --split test --task2-threshold "$T" \
    --json runs/v4-finetune/test-metrics.json
$PY -m core.checkpoint export runs/v4-finetune/best.pt checkpoints/default.pt --task2-threshold "$T" \
    --metrics-json runs/v4-finetune/test-metrics.json

# 7. The scheduler comparison: the same configuration twice, 12 epochs of 2,500 images,
#    same seed and therefore the same per-epoch subsets; only the scheduler differs.
for sched in cosine step; do
  finished runs/sched-$sched || $PY -m core.train --data $DATA --out runs/sched-$sched $(resume runs/sched-$sched) $COMMON \
      --epochs 12 --subset-fraction 0.05 --scheduler $sched
  mkdir -p checkpoints/curves/$sched
  cp runs/sched-$sched/config.json runs/sched-$sched/history.json checkpoints/curves/$sched/
done
