# Sourced by tools/test_loaded.sh and tools/repeat_loaded.sh: one CPU-bound process per core for as
# long as the calling script runs, as on a busy CI machine; ended by their pids when it exits.
cpu_load_pids=()
cpu_load_stop() { for pid in "${cpu_load_pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
cpu_load_start() {  # $1: the python to spin
  trap cpu_load_stop EXIT INT TERM
  for _ in $(seq "$(nproc)"); do
    "$1" -c 'while True: pass' &
    cpu_load_pids+=($!)
  done
}
