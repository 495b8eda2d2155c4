#!/usr/bin/env bash
# docs/reproduction.md's runs for issue 17: ResNet-20 with the paper's recipe, unchanged, 64k iterations; ResNet-20
# with the fast recipe at 10 epochs, in fit.py and in PyTorch (the implementation or the images?); ResNet-20 with the
# fast recipe at 30 epochs on the copy re-encoded at JPEG quality 50; figure6's 20-layer twins with the fast recipe at
# 30 epochs; the parity pair with the paper recipe at 20 epochs; figure6's deeper twins, depth by depth; then
# ResNet-20 with the fast recipe at 164 epochs.
# Rerun to resume (finished runs are skipped).
#   RUNS=~/resnet-runs DATA_DIR=../shared/tensorflow_datasets benchmarks/queues/table6.sh
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DD=$(cd "${DATA_DIR:-../shared/tensorflow_datasets}" && pwd)
T=${RUNS:-$HOME/resnet-runs}/table6
export TF_CPP_MIN_LOG_LEVEL=2
if [ ! -f "$T/resnet20/metrics.json" ]; then
  echo "=== $(date -u +%FT%TZ) resnet20, paper recipe, 64k iterations"
  nice -n 19 "$PY" trainers/fit.py --arch resnet20 --recipe paper --data-dir "$DD" --output-dir "$T/resnet20" \
    --backup-every 200 || exit $?
fi
# Is the paper recipe's shortfall on this copy the implementation or the images? The fast recipe at 10 epochs in
# fit.py and the same network, recipe and images in PyTorch float32 (benchmarks/torch_parity.py; skipped with one line
# where no PyTorch interpreter is installed: TORCH_PYTHON or ~/torch-venv/bin/python).
if [ ! -f "$T/resnet20-fast-e10/metrics.json" ]; then
  echo "=== $(date -u +%FT%TZ) resnet20, fast recipe, 10 epochs (the Keras side of the PyTorch parity run)"
  nice -n 19 "$PY" trainers/fit.py --arch resnet20 --recipe fast --epochs 10 --data-dir "$DD" \
    --output-dir "$T/resnet20-fast-e10" --backup-every 200 || exit $?
fi
TORCH_PY=${TORCH_PYTHON:-$HOME/torch-venv/bin/python}
torch_parity() {  # RECIPE EPOCHS: the PyTorch side of a parity pair, beside fit.py's run resnet20-RECIPE-eEPOCHS
  [ -f "$T/torch-resnet20-$1-e$2/result.json" ] && return 0
  if [ ! -x "$TORCH_PY" ]; then echo "=== skipped the PyTorch parity run: no interpreter at $TORCH_PY"; return 0; fi
  echo "=== $(date -u +%FT%TZ) resnet20, $1 recipe, $2 epochs, in PyTorch float32"
  nice -n 19 "$PY" benchmarks/torch_parity.py --recipe "$1" --epochs "$2" --data-dir "$DD" --torch-python "$TORCH_PY" \
    --output-dir "$T/torch-resnet20-$1-e$2" --keras-run "$T/resnet20-$1-e$2"
}
torch_parity fast 10 || exit $?
# What the JPEG copy costs at a longer budget than the 5 epochs of docs/benchmarks.md: the fast recipe's 30 epochs on
# the copy re-encoded once more at quality 50, against figure6's ResNet-20 (the same recipe on the copy as it is).
if [ ! -f "$T/resnet20-fast-e30-q50/metrics.json" ]; then
  echo "=== $(date -u +%FT%TZ) resnet20, fast recipe, 30 epochs, re-encoded at JPEG quality 50"
  nice -n 19 "$PY" trainers/fit.py --arch resnet20 --recipe fast --epochs 30 --jpeg-quality 50 --data-dir "$DD" \
    --output-dir "$T/resnet20-fast-e30-q50" --backup-every 200 || exit $?
fi
# Figure 6 with the fast recipe at its 30 epochs (the paper's 164 epochs for eight networks would be some 60 hours
# here: docs/reproduction.md), plain and residual twins, the shallow depths first so that a partial queue still
# compares depths.
figure6() {
  echo "=== $(date -u +%FT%TZ) figure6 fast recipe, 30 epochs, depths $1"
  nice -n 19 "$PY" trainers/reproduce.py figure6 --recipe fast --epochs 30 --depths "$1" --data-dir "$DD" \
    --root "$T/figure6-fast-e30" --backup-every 200
}
figure6 20 || exit $?
# The parity pair again with the paper's recipe shortened to 20 epochs (milestones at 10 and 15): weight decay on
# every weight, momentum without Nesterov, drops to 0.001, which the fast recipe's pair does not exercise.
if [ ! -f "$T/resnet20-paper-e20/metrics.json" ]; then
  echo "=== $(date -u +%FT%TZ) resnet20, paper recipe, 20 epochs (the Keras side of the PyTorch parity run)"
  nice -n 19 "$PY" trainers/fit.py --arch resnet20 --recipe paper --epochs 20 --data-dir "$DD" \
    --output-dir "$T/resnet20-paper-e20" --backup-every 200 || exit $?
fi
torch_parity paper 20 || exit $?
for depths in 20,32 20,32,44 20,32,44,56; do
  figure6 $depths || exit $?
done
# The project's fast recipe on ResNet-20 at the paper's budget (164 epochs, cosine): the candidate for ResNet-20 at
# or above the paper's 91.25% on the JPEG copy (its 30 epochs reached 87.52%, still underfit). After figure6's depths
# since 2026-12-06: the paper recipe's run showed the copy costs about 3.5 points at this budget (docs/reproduction.md).
if [ ! -f "$T/resnet20-fast-e164/metrics.json" ]; then
  echo "=== $(date -u +%FT%TZ) resnet20, fast recipe, 164 epochs"
  nice -n 19 "$PY" trainers/fit.py --arch resnet20 --recipe fast --epochs 164 --data-dir "$DD" \
    --output-dir "$T/resnet20-fast-e164" --backup-every 200 || exit $?
fi
echo "=== $(date -u +%FT%TZ) table6 queue done"
