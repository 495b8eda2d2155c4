#!/usr/bin/env bash
# Ends the running queue (run_all.sh) without losing the iterations since the last backup: the queue's shells are
# killed first, so that none starts another run, then its trainer gets SIGTERM, writes a backup at the next step
# boundary and exits (75). Rerunning run_all.sh resumes from that step. Use it before a session or a machine ends.
#   RUNS=~/resnet-runs benchmarks/queues/stop.sh
set -u
runs=${RUNS:-$HOME/resnet-runs}
command -v pgrep > /dev/null || { echo "stop.sh needs pgrep (procps)" >&2; exit 2; }
pid=$(cat "$runs/queue.pid" 2>/dev/null) || { echo "no queue has run under $runs (no queue.pid)"; exit 0; }
if ! kill -0 "$pid" 2>/dev/null; then echo "the queue under $runs is not running (process $pid has ended)"; exit 0; fi
trainers="" shells=""
walk() {  # the queue's processes: trainers (not descended into) and everything else
  # -ww: without it ps cuts the command line at $COLUMNS (80 where that is set), and a long interpreter path
  # pushes trainers/fit.py past the cut (seen in CI: the trainer was taken for a shell and killed).
  if ps -ww -o args= -p "$1" | grep -qE 'trainers/(fit|reproduce)\.py'; then trainers="$trainers $1"; return; fi
  shells="$shells $1"
  local child
  for child in $(pgrep -P "$1"); do walk "$child"; done
}
walk "$pid"
kill -KILL $shells 2>/dev/null
if [ -z "${trainers// /}" ]; then echo "queue $pid stopped; no trainer was running"; exit 0; fi
kill -TERM $trainers
echo "queue $pid stopped; SIGTERM sent to its trainer(s):$trainers (each writes a backup at its next step)"
for t in $trainers; do
  waited=0
  while kill -0 "$t" 2>/dev/null; do
    if [ $waited -ge 600 ]; then echo "process $t still running after 600 s; left running" >&2; exit 1; fi
    sleep 1; waited=$((waited + 1))
  done
done
echo "done: rerun run_all.sh to resume"
