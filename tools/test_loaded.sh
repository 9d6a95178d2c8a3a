#!/usr/bin/env bash
# `make test-loaded`: the whole `make test`, RUNS times in a row (default 3), while one CPU-bound
# process per core runs for the whole time, as on a busy CI machine. Stops at the first failure
# and prints each run's time. The load processes are ended by their pids when this script ends.
set -euo pipefail
runs=${RUNS:-3}
cores=$(nproc)
python=${PYTHON:-python3}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for _ in $(seq "$cores"); do
  "$python" -c 'while True: pass' &
  pids+=($!)
done
echo "test-loaded: $cores CPU-bound processes (pids ${pids[*]}), $runs runs of make test"
for run in $(seq "$runs"); do
  start=$(date +%s)
  if ! make test; then
    echo "test-loaded: run $run of $runs FAILED after $(( $(date +%s) - start )) s"
    exit 1
  fi
  echo "test-loaded: run $run of $runs passed in $(( $(date +%s) - start )) s"
done
echo "test-loaded: $runs of $runs runs passed under load"
