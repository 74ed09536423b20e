#!/usr/bin/env bash
# bench/capture-backends.sh: recording overhead of each capture backend, side by side in one hyperfine run
# per workload: 1,000,000 writes of 16 bytes to one file, and 20,000 creates of 100-byte files, each bare and
# under `diffkeeper record --capture ebpf|fanotify|inotify`. Work files go to a tmpfs
# mounted for the run (so disk write-back does not dominate); results to bench/results/capture-*.json and a
# markdown table on stdout. Needs root for eBPF and the mount. BENCH_RUNS (default 5) runs per command.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DK=${DIFFKEEPER:-$REPO/bin/diffkeeper}
RUNS=${BENCH_RUNS:-5}
RESULTS=$REPO/bench/results
mkdir -p "$RESULTS"
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
command -v jq >/dev/null || apt-get install -y -qq jq >/dev/null
W=$(mktemp -d /tmp/dk-bench-XXXXXX)
mount -t tmpfs -o size=2g dk-bench "$W"
trap 'umount -l "$W"; rmdir "$W"' EXIT
gcc -O2 -o "$W/writes16" "$REPO/bench/workloads/writes16.c"
gcc -O2 -o "$W/creates" "$REPO/bench/workloads/creates.c"
mkdir -p "$W/ws" "$W/traces"
n=0
run() { # run NAME WORKLOAD-COMMAND
  local name=$1 prog=$2
  hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json "$RESULTS/capture-$name.json" \
    --prepare "rm -rf '$W/ws' '$W/traces'; mkdir -p '$W/ws' '$W/traces'" \
    -n bare "$prog" \
    -n ebpf "'$DK' record --quiet --capture ebpf --trace '$W/traces/e' --watch '$W/ws' -- $prog" \
    -n fanotify "'$DK' record --quiet --capture fanotify --trace '$W/traces/f' --watch '$W/ws' -- $prog" \
    -n inotify "'$DK' record --quiet --capture inotify --trace '$W/traces/i' --watch '$W/ws' -- $prog" >&2
  local bare
  bare=$(jq '.results[0].mean' "$RESULTS/capture-$name.json")
  for i in 0 1 2 3; do
    jq -r --argjson b "$bare" --argjson i "$i" --arg w "$name" \
      '.results[$i] | "| \($w) | \(.command) | \((.mean*1000)|floor) ± \((.stddev*1000)|floor) ms | \((.mean/$b*100|floor)/100)× |"' \
      "$RESULTS/capture-$name.json"
  done
}
echo "| workload | command | mean ± σ | ratio to bare |"
echo "|---|---|---|---|"
run writes16 "$W/writes16 $W/ws 1000000"
run creates "$W/creates $W/ws 20000"
