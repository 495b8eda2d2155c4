# Sourced by the queues (imagenette.sh, leaderboard.sh): `run OUT_DIR FIT_ARGS...` trains one fit.py run at nice 19
# into OUT_DIR, or skips it where it has finished; an unfinished one resumes from its backup. Needs PY and DD set.
run() { local out=$1; shift
  if [ -f "$out/metrics.json" ]; then echo "skip $out"; return; fi
  echo "=== $(date -u +%FT%TZ) $out"
  nice -n 19 "$PY" trainers/fit.py "$@" --data-dir "$DD" --output-dir "$out" --backup-every 200; local rc=$?
  echo "rc=$rc $out"
  # 75: stopped by SIGTERM after a backup (a session ending, a preemption): stop the queue here rather than
  # start the next run; rerunning the queue resumes this one.
  if [ $rc = 75 ]; then exit 75; fi; }
