#!/usr/bin/env bash
# Both measurement queues, one after another, logs beside the runs. Rerun to resume.
set -u
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-$HOME/resnet-runs}
mkdir -p "$runs/imagenette" "$runs/table6"
"$here/imagenette.sh" >> "$runs/imagenette/queue.log" 2>&1
"$here/table6.sh" >> "$runs/table6/queue.log" 2>&1
