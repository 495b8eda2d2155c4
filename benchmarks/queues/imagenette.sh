#!/usr/bin/env bash
# docs/imagenet.md's runs (issue 16), one after another at nice 19. Rerun to resume: a finished run is
# skipped, an unfinished one resumes from its backup. Run from a checkout (or a worktree of it):
#   RUNS=~/resnet-runs DATA_DIR=../shared/tensorflow_datasets benchmarks/queues/imagenette.sh [rows|figure4]
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DD=$(cd "${DATA_DIR:-../shared/tensorflow_datasets}" && pwd)
R=${RUNS:-$HOME/resnet-runs}/imagenette
export TF_CPP_MIN_LOG_LEVEL=2
. benchmarks/queues/fit_run.sh
F4=$R/figure4-fast-128-e20
if [ "${1:-rows}" = rows ]; then
  # the results table's 20-epoch rows (issue 16)
  run "$F4/resnet18" --arch resnet18 --recipe fast --image-size 128 --epochs 20
  run "$R/r18-paper-e20" --arch resnet18 --recipe paper --image-size 128 --epochs 20
  run "$F4/resnet34" --arch resnet34 --recipe fast --image-size 128 --epochs 20
  run "$R/r50-fast-e20" --arch resnet50 --recipe fast --image-size 128 --epochs 20
  echo "=== $(date -u +%FT%TZ) imagenette rows done"
elif [ "$1" = figure4 ]; then
  # Figure 4 at 128 px (adds plain-18 and plain-34, about 3.5 h here; its ResNets are the fast runs above).
  # docs/imagenet.md's Figure 4 stands at 48 px, so run_all.sh runs this after the CIFAR queue.
  echo "=== $(date -u +%FT%TZ) figure4"
  nice -n 19 "$PY" trainers/reproduce.py figure4 --recipe fast --epochs 20 --image-size 128 --data-dir "$DD" --root "$F4" \
    || exit $?
  echo "=== $(date -u +%FT%TZ) figure4 at 128 px done"
else
  echo "usage: imagenette.sh [rows|figure4]" >&2; exit 2
fi
