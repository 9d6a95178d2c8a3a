#!/usr/bin/env bash
# `make test-loaded`: the whole `make test`, RUNS times in a row (default 3), while one CPU-bound
# process per core runs for the whole time, as on a busy CI machine. Stops at the first failure
# and prints each run's time. The load processes are ended by their pids when this script ends.
set -euo pipefail
runs=${RUNS:-3}
python=${PYTHON:-python3}
source "$(dirname "$0")/cpu_load.sh"
cpu_load_start "$python"
echo "test-loaded: $(nproc) CPU-bound processes (pids ${cpu_load_pids[*]}), $runs runs of make test"
for run in $(seq "$runs"); do
  start=$(date +%s)
  if ! make test; then
    echo "test-loaded: run $run of $runs FAILED after $(( $(date +%s) - start )) s"
    exit 1
  fi
  echo "test-loaded: run $run of $runs passed in $(( $(date +%s) - start )) s"
done
echo "test-loaded: $runs of $runs runs passed under load"
