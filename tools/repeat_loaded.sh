#!/usr/bin/env bash
# Run one test (or a few) many times in a row while one CPU-bound process per core runs, as on a
# busy CI machine, and count how often it passes: for a test that once failed and could not be
# made to fail again. Every run is a fresh pytest process (its own embedded broker); failing runs'
# output is kept under $OUT. The load processes are ended by their pids when this script ends.
#
#   RUNS=100 tools/repeat_loaded.sh "tests/integration/test_ingest.py::test_restart_loses_nothing_and_reaccepts_nothing"
set -uo pipefail
runs=${RUNS:-100}
python=${PYTHON:-.venv/bin/python}
out=${OUT:-$(mktemp -d -t carehub-repeat-XXXX)}
mkdir -p "$out"  # a given OUT that does not exist yet
source "$(dirname "$0")/cpu_load.sh"
cpu_load_start "$python"
echo "repeat-loaded: $(nproc) CPU-bound processes (pids ${cpu_load_pids[*]}); $runs runs of: $*"
passed=0 failed=0 started=$(date +%s)
for run in $(seq "$runs"); do
  t0=$(date +%s)
  if "$python" -m pytest -q -p no:cacheprovider "$@" > "$out/run-$run.log" 2>&1; then
    passed=$((passed + 1)); rm -f "$out/run-$run.log"; verdict=passed
  else
    failed=$((failed + 1)); verdict="FAILED (log $out/run-$run.log)"
  fi
  echo "repeat-loaded: run $run of $runs $verdict in $(( $(date +%s) - t0 )) s"
done
echo "repeat-loaded: $passed passed, $failed failed of $runs runs under load in $(( $(date +%s) - started )) s: $*"
[ "$failed" -eq 0 ]
