#!/usr/bin/env bash
# Issue 38's runs toward the Imagenette leaderboard (128 px, from random weights), one after another at nice 19.
# Rerun to resume: a finished run is skipped, an unfinished one resumes from its backup. Run from a checkout:
#   RUNS=~/resnet-runs DATA_DIR=../shared/tensorflow_datasets benchmarks/queues/leaderboard.sh [screen|baseline|recipe|blur|flat|deeper|paper|long]
# screen: one seed of each change at 5 epochs on ResNet-18, the cheapest network, against the fast recipe's
# baseline on the same machine (the ablation table's first rows).
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DD=$(cd "${DATA_DIR:-../shared/tensorflow_datasets}" && pwd)
R=${RUNS:-$HOME/resnet-runs}/leaderboard
export TF_CPP_MIN_LOG_LEVEL=2
. benchmarks/queues/fit_run.sh
if [ "${1:-screen}" = screen ]; then
  common=(--recipe fast --image-size 128 --epochs 5 --seed 0)
  run "$R/screen/resnet18d" --arch resnet18d "${common[@]}"
  run "$R/screen/resnet18" --arch resnet18 "${common[@]}"
  echo "=== $(date -u +%FT%TZ) screen done"
elif [ "$1" = baseline ]; then
  # The ablation's baseline, ResNet-18-D with the fast recipe, at 3 seeds (seed 0 is the screen's run).
  for seed in 1 2; do
    run "$R/baseline/resnet18d-s$seed" --arch resnet18d --recipe fast --image-size 128 --epochs 5 --seed $seed
  done
  echo "=== $(date -u +%FT%TZ) baseline done"
elif [ "$1" = recipe ]; then
  # One recipe change at a time on ResNet-18-D, seed 0, against the baseline (the ablation table's rows).
  common=(--arch resnet18d --recipe fast --image-size 128 --epochs 5 --seed 0)
  run "$R/recipe/flat-cosine" "${common[@]}" --lr-schedule flat-cosine
  run "$R/recipe/adamw" "${common[@]}" --optimizer adamw
  run "$R/recipe/lamb" "${common[@]}" --optimizer lamb
  echo "=== $(date -u +%FT%TZ) recipe done"
elif [ "$1" = blur ]; then
  # Anti-aliased downsampling on ResNet-18-D with the fast recipe, seed 0.
  common=(--arch resnet18d --recipe fast --image-size 128 --epochs 5 --seed 0)
  run "$R/blur/stem" "${common[@]}" --blur-pool stem
  run "$R/blur/all" "${common[@]}" --blur-pool all
  echo "=== $(date -u +%FT%TZ) blur done"
elif [ "$1" = flat ]; then
  # The flat-then-cosine schedule, the first change that beat the baseline's spread: seeds 1 and 2.
  for seed in 1 2; do
    run "$R/flat/resnet18d-s$seed" --arch resnet18d --recipe fast --image-size 128 --epochs 5 --seed $seed \
      --lr-schedule flat-cosine
  done
  echo "=== $(date -u +%FT%TZ) flat done"
elif [ "$1" = deeper ]; then
  # The deeper D networks with the flat-then-cosine schedule, seed 0.
  for arch in resnet50d resnet34d; do
    run "$R/deeper/$arch" --arch $arch --recipe fast --image-size 128 --epochs 5 --seed 0 --lr-schedule flat-cosine
  done
  echo "=== $(date -u +%FT%TZ) deeper done"
elif [ "$1" = paper ]; then
  # The leaderboard table's rows for the paper's networks: ResNet-34 and ResNet-50 with issue 16's fast recipe,
  # 3 seeds each (trainers/seeds.py --runs reports them).
  for arch in resnet34 resnet50; do
    for seed in 0 1 2; do
      run "$R/paper/$arch-s$seed" --arch $arch --recipe fast --image-size 128 --epochs 5 --seed $seed
    done
  done
  echo "=== $(date -u +%FT%TZ) paper done"
elif [ "$1" = long ]; then
  # The leaderboard's 20-epoch row: the best 5-epoch configuration (ResNet-18-D, flat-then-cosine) at 20 epochs,
  # without and with mixup (a regulariser that needs the longer run), seed 0.
  common=(--arch resnet18d --recipe fast --image-size 128 --epochs 20 --seed 0 --lr-schedule flat-cosine)
  run "$R/long/resnet18d-e20" "${common[@]}"
  run "$R/long/resnet18d-e20-mixup" "${common[@]}" --mixup 0.2
  echo "=== $(date -u +%FT%TZ) long done"
else
  echo "usage: leaderboard.sh [screen|baseline|recipe|blur|flat|deeper|paper|long]" >&2; exit 2
fi
