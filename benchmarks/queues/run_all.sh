#!/usr/bin/env bash
# The measurement queues, one after another, logs beside the runs. Rerun to resume.
set -u
# `nice -n 19` orders processes within one session only: with autogroup scheduling (Linux's default,
# /proc/sys/kernel/sched_autogroup_enabled = 1) each session gets an equal share of the CPU, so a queue started
# with `setsid` took half of a 2-core machine from the tests run in another session (seen 2026-12-02: the test
# command took 37 min beside it). Started as its own session's leader, the queue lowers its whole session too.
if [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ] && [ -w /proc/self/autogroup ]; then echo 19 > /proc/self/autogroup; fi
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-$HOME/resnet-runs}
mkdir -p "$runs/imagenette" "$runs/table6"
# One queue at a time: a second would find the running run locked, log that and start the next one beside it.
# The lock is held by every process of the queue (a trainer left running after its shell died too).
if command -v flock > /dev/null; then
  exec 9> "$runs/queue.lock"
  if ! flock -n 9; then echo "a queue is already running under $runs (benchmarks/queues/stop.sh stops it)" >&2; exit 2; fi
else
  echo "flock (util-linux) not found: nothing stops a second queue beside this one" >&2
fi
echo $$ > "$runs/queue.pid.tmp" && mv "$runs/queue.pid.tmp" "$runs/queue.pid"   # for stop.sh
# The CIFAR-10 paper-budget runs (issue 17), then Imagenette's results rows (issue 16, measured and documented:
# a machine that lost them retrains them last), then Figure 4 at 128 px on Imagenette (an extra:
# docs/imagenet.md's Figure 4 stands at 48 px).
# A queue that stops with 75 (a run stopped by SIGTERM after its backup) ends this one too: rerun to resume.
"$here/table6.sh" >> "$runs/table6/queue.log" 2>&1; [ $? = 75 ] && exit 75
"$here/imagenette.sh" rows >> "$runs/imagenette/queue.log" 2>&1; [ $? = 75 ] && exit 75
"$here/imagenette.sh" figure4 >> "$runs/imagenette/queue.log" 2>&1
