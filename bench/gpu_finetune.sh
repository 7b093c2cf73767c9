#!/usr/bin/env bash
# Fine-tunes the shipped model on one lent GPU, within one device call (about 9 minutes in all):
# two generator mixes side by side on the same GPU, so one call answers "does the share of
# negatives (letters alone, digit-free scenes) cost recall on real digits?".
#
#   bash bench/gpu_finetune.sh            # on the GPU machine, from the repository root
#   DEVICE=cpu TRAIN_IMAGES=300 EPOCH_IMAGES=64 VALID_IMAGES=40 BUDGET_S=400 bash bench/gpu_finetune.sh   # dry run
#
# One long run instead (the GPU is launch-bound with this compact model: one run in float32 is fastest), on the
# 514 fonts of scripts/fonts.sh, from the fonts model (both carried: runs/ and .gpu/ are git-ignored):
#   python3 -c "from core.synth import usable_fonts; import os; print('\n'.join(f for f in usable_fonts() if os.path.isfile(f)))" \
#     | tar -cJf .gpu/fonts.tar.xz -T -      # 31 MB, here, once
#   MIXES=default PRECISION=fp32 WEIGHTS=runs/fonts-finetune/best.pt TRAIN_IMAGES=150000 bash bench/gpu_finetune.sh
#   (device carry: .whl, .gpu, runs/fonts-finetune/best.pt)
#
# Soup ingredients: several seeds of one start side by side (RUNS="MIX:SEED ..."; mixes generated once each; a run
# of seed S is named MIX-sS). 2026-11-27, third lent GPU: two calls (485 s, then 291 s on the warm machine, which
# kept /tmp/work's data), three runs each at 62-67 training images/s per run (about 195 together), README "A third
# lent GPU":
#   RUNS="default:1 neg:2 neg:3" DATA_SEED=31 PRECISION=fp32 WEIGHTS=runs/soup-ft-s2/best-lineage.pt LR=2e-4 \
#     TRAIN_IMAGES=24000 VALID_IMAGES=300 EPOCH_IMAGES=3000 WORKERS=4 BUDGET_S=555 RESERVE_S=70 WORK=/tmp/work \
#     bash bench/gpu_finetune.sh       # then RUNS="default:4 neg:5 default:6" EPOCHS=3 BUDGET_S=285 RESERVE_S=45
#   (device carry: .whl, .gpu/fonts.tar.xz, runs/soup-ft-s2/best-lineage.pt)
#
# A wider model against a control (2026-11-28, seventh lent GPU, H200; README "A seventh lent GPU"): the same
# weights at width 1 and grown to 1.5, same data, seed and subsets, side by side at 88-91 training images/s each:
#   RUNS="default:1 default:1:1.5" PRECISION=fp32 WEIGHTS=checkpoints/default.pt LR=2e-4 DATA_SEED=47 \
#     TRAIN_IMAGES=30000 VALID_IMAGES=500 EPOCH_IMAGES=8000 WORKERS=6 BUDGET_S=540 RESERVE_S=75 WORK=/tmp/work \
#     bash bench/gpu_finetune.sh
#
# Faint strokes against a control (2026-11-28, eighth lent GPU, H200; README "An eighth lent GPU"): the same seed-53
# images, plain and with --faint-strokes 0.3, 2 epochs here then a third on the warm machine (--resume --epochs 3):
#   RUNS="default:1 faint:1" PRECISION=fp32 WEIGHTS=checkpoints/default.pt LR=2e-4 DATA_SEED=53 TRAIN_IMAGES=30000 \
#     VALID_IMAGES=500 EPOCH_IMAGES=8000 WORKERS=6 BUDGET_S=545 RESERVE_S=75 WORK=/tmp/work bash bench/gpu_finetune.sh
#
# Without RUNS, both runs start from checkpoints/default.pt and use the same seed (the same images wherever both
# mixes draw digits). Each trains one epoch first; its time sizes the rest of the run, which then
# continues with --resume --epochs N (the cosine schedule is stretched to N), so the runs end
# before the budget whatever the GPU's speed. Results land in $OUT (or runs/gpu): each run's
# best.pt, and gpu-runs.tar.gz with config/history/log/report and the Task 2 threshold chosen
# on each run's own synthetic validation split.
#
# A bare GPU machine without network needs the missing packages as wheels in .whl/ (pycocotools==2.0.11 and
# pillow==13.0.0 for its Python) and, without system fonts, .ttf files in .gpu/fonts (both git-ignored, carried).
#
# On an H100 (2026-11-27, one run, fp32, 12 workers): 133-140 training images/s; README "A second lent GPU".
# On an H100 (2026-11-26, one 486 s call): 92 s to generate both sets, 83 training images/s per run, so each
# run trained 2 epochs of 8,000 images; README "Which part of v4 costs real recall" has the results.
# bench/gpu_step_profile.py found the compact model launch-bound there (282 images/s alone in float32, 217 with
# AMP): a longer lease would do better with one run at a time and --no-amp.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-540}          # the whole script, start to finish
RESERVE_S=${RESERVE_S:-60}         # kept for the threshold sweeps and packing after training
DEVICE=${DEVICE:-cuda}
TRAIN_IMAGES=${TRAIN_IMAGES:-30000}
VALID_IMAGES=${VALID_IMAGES:-1000}
EPOCH_IMAGES=${EPOCH_IMAGES:-8000}
WORKERS=${WORKERS:-6}
MIXES=${MIXES:-default light}      # generator mixes, one run each, side by side
RUNS=${RUNS:-}                     # instead: "MIX:SEED[:WIDTH] ..." runs side by side, several per mix (soup
                                   # ingredients); WIDTH: WEIGHTS grown that wide first (core.checkpoint grow)
DATA_SEED=${DATA_SEED:-11}         # the generator's seed (a new one: images no earlier run has seen)
WEIGHTS=${WEIGHTS:-checkpoints/default.pt}
LR=${LR:-4e-4}                     # AdamW peak learning rate (batch 32), cosine to 0
PRECISION=${PRECISION:-amp}        # amp (float32 if it fails) or fp32
PY=${PY:-python3}
# EPOCHS (unset: sized from the first epoch to fit BUDGET_S): the run's length in epochs, fixed
if [ -n "$RUNS" ]; then  # the mixes are those the runs name, each generated once
  MIXES=$(for run in $RUNS; do echo "${run%%:*}"; done | sort -u | tr '\n' ' ')
else
  RUNS=$(for mix in $MIXES; do printf '%s:0 ' "$mix"; done)
fi
field() { echo "$1" | cut -d: -f"$2"; }       # field N of MIX:SEED[:WIDTH]
width_of() { local w; w=$(field "$1" 3); echo "${w:-1}"; }
run_name() {  # seed 0 and width 1: the mix's name alone
  local name seed width; name=$(field "$1" 1); seed=$(field "$1" 2); width=$(width_of "$1")
  [ "$seed" = 0 ] || name="$name-s$seed"
  [ "$width" = 1 ] || name="$name-w$width"
  echo "$name"
}
NAMES=$(for run in $RUNS; do run_name "$run"; done | tr '\n' ' ')
DEST=${OUT:-runs/gpu}
WORK=${WORK:-runs/gpu-work}
mkdir -p "$DEST" "$WORK"
LOG="$WORK/script.log"
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

# 1. Packages and fonts the GPU image lacks (carried: .whl/ with pycocotools and pillow, .gpu/fonts).
if ! $PY -c "import pycocotools" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || { say "wheel install failed"; exit 1; }
fi
if [ -f .gpu/fonts.tar.xz ]; then  # a font list packed here (see above): those fonts, wherever they were installed
  mkdir -p /tmp/gpu-fonts && tar -xJf .gpu/fonts.tar.xz -C /tmp/gpu-fonts && export DIGIT_STUDIO_FONT_DIRS=/tmp/gpu-fonts
elif ! ls /usr/share/fonts/truetype/dejavu/*.ttf >/dev/null 2>&1 && [ -d .gpu/fonts ]; then
  export DIGIT_STUDIO_FONT_DIRS=$PWD/.gpu/fonts
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
$PY -c "import torch, torchvision, PIL, pycocotools, numpy; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'pillow', PIL.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$LOG" || exit 1

# 2. Data: each mix named, same seed, all cores (faint: the default's images, strokes faded in up to 30% of numbers).
declare -A MIX=([default]="" [light]="--digit-free 0.02 --words-alone 0.02" [neg]="--digit-free 0.10 --words-alone 0.08"
               [faint]="--faint-strokes 0.3")
CORES=$(nproc)
for name in $MIXES; do
  [ -f "$WORK/data-$name/train.json" ] || $PY -m core.synth --out "$WORK/data-$name" --train "$TRAIN_IMAGES" \
      --valid "$VALID_IMAGES" --test 0 --seed "$DATA_SEED" --workers "$CORES" ${MIX[$name]-} > "$WORK/synth-$name.log" 2>&1 &
done
wait
for name in $MIXES; do
  [ -f "$WORK/data-$name/train.json" ] || { say "generation failed:"; tail -5 "$WORK/synth-$name.log"; exit 1; }
  say "data-$name: $(tail -1 "$WORK/synth-$name.log")"
done

FRACTION=$($PY -c "print(min(1.0, $EPOCH_IMAGES / $TRAIN_IMAGES))")
start_weights() { [ "$1" = 1 ] && echo "$WEIGHTS" || echo "$WORK/grown-w$1.pt"; }
for width in $(for run in $RUNS; do width_of "$run"; done | sort -u); do
  [ "$width" = 1 ] || $PY -m core.checkpoint grow --force "$WEIGHTS" "$(start_weights "$width")" --width "$width" \
    | tee -a "$LOG" || exit 1
done
train() {  # MIX:SEED[:WIDTH], extra flags...
  local mix seed width name; mix=$(field "$1" 1); seed=$(field "$1" 2); width=$(width_of "$1"); name=$(run_name "$1")
  shift
  $PY -m core.train --data "$WORK/data-$mix" --out "$WORK/run-$name" --arch digitnet_fpn --width "$width" \
    --weights "$(start_weights "$width")" --batch-size 32 --lr "$LR" --weight-decay 5e-4 --warmup-steps 100 \
    --clip-grad-norm 10 --seed "$seed" --subset-fraction "$FRACTION" --scheduler cosine --device "$DEVICE" \
    --workers "$WORKERS" "$@" >> "$WORK/train-$name.log" 2>&1
}

all_ran() { for name in $NAMES; do [ -f "$WORK/run-$name/last.pt" ] || return 1; done; }
FIRST=${NAMES%% *}
# 3. One epoch each, all at once; with mixed precision first (unless fp32), in float32 if that fails.
AMP=$([ "$PRECISION" = fp32 ] && echo "--no-amp" || echo "")
for run in $RUNS; do train "$run" --epochs 1 $AMP & done
wait
if ! all_ran && [ -z "$AMP" ]; then
  say "first epoch failed with AMP; again in float32:"; tail -15 "$WORK/train-$FIRST.log" | tee -a "$LOG"
  for name in $NAMES; do rm -rf "$WORK/run-$name"; done
  AMP="--no-amp"
  for run in $RUNS; do train "$run" --epochs 1 $AMP & done
  wait
fi
all_ran || { say "training failed:"; tail -30 "$WORK/train-$FIRST.log"; exit 1; }
grep -h "^epoch.*mAP" "$WORK"/train-*.log | tee -a "$LOG"

# 4. Size the rest from the slowest run's first epoch, then continue them all.
EPOCH_S=$($PY -c "import json; print(max(json.load(open('$WORK/run-' + n + '/history.json'))[0]['seconds'] for n in '$NAMES'.split()))")
if [ -n "${EPOCHS:-}" ]; then  # set: a fixed length (to repeat a run whatever the machine's speed)
  say "first epoch took $EPOCH_S s (slower run); continuing to the $EPOCHS epochs asked for"
else
  EPOCHS=$($PY -c "print(max(1, min(40, 1 + int(($(left) - $RESERVE_S - 25) / ($EPOCH_S * 1.1)))))")
  say "first epoch took $EPOCH_S s (slower run); continuing to $EPOCHS epochs with $(left) s left"
fi
if [ "$EPOCHS" -gt 1 ]; then
  PIDS=()
  for run in $RUNS; do train "$run" --resume --epochs "$EPOCHS" & PIDS+=($!); done
  # Past the budget, a stop request ends each run at its next step; best.pt keeps the best finished
  # epoch. (Data workers inherit the trainer's handler, so the signal only sets their own flag.)
  ( sleep $(( $(left) - RESERVE_S )); pkill -TERM -f "core.train --data $WORK/data-" ) &
  WATCHDOG=$!
  wait "${PIDS[@]}"
  kill $WATCHDOG 2>/dev/null
fi
grep -h "^epoch.*mAP\|core.train:" "$WORK"/train-*.log | tee -a "$LOG"

# 5. Task 2 reader of each run on its own synthetic validation split (never on real images).
for run in $RUNS; do
  mix=${run%%:*} name=$(run_name "$run")
  $PY -m core.evaluate --ckpt "$WORK/run-$name/best.pt" --data "$WORK/data-$mix" --split valid --sweep-task2 \
    --device "$DEVICE" --json "$WORK/run-$name/valid-metrics.json" > "$WORK/valid-$name.log" 2>&1 &
done
wait
for run in $RUNS; do
  mix=${run%%:*} name=$(run_name "$run")
  say "$name valid: $(tail -3 "$WORK/valid-$name.log" | tr '\n' ' ')"
  if [ "$(width_of "$run")" = 1 ]; then cp "$WORK/run-$name/best.pt" "$DEST/$name-best.pt"
  else  # a wider model's float32 training checkpoint passes 16 MB, what one file may bring back from a lent GPU
    $PY -m core.checkpoint export --force "$WORK/run-$name/best.pt" "$DEST/$name-best.pt" | tee -a "$LOG"
  fi
  cp "$WORK/data-$mix/synth.json" "$WORK/run-$name/synth.json"
done
PACK=(script.log)
for mix in $MIXES; do PACK+=(synth-$mix.log); done
for name in $NAMES; do PACK+=(train-$name.log valid-$name.log run-$name); done
tar -czf "$DEST/gpu-runs.tar.gz" -C "$WORK" --exclude '*.pt' "${PACK[@]}"
say "done; $(left) s of the budget left"
