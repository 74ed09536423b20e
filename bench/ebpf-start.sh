#!/usr/bin/env bash
# bench/ebpf-start.sh: the fixed cost of `record --capture ebpf`, two binaries side by side in one hyperfine run
# per workload: `record -- true` (nothing but the start and the end), then the ebpf-only part of
# bench/capture-backends.sh (20,000 creates of 100 B and 1,000,000 writes of 16 B, each bare and under both
# binaries), then losses at a steady 100,000 writes/s for 5 s under each binary. Work files go to a tmpfs mounted
# for the run. Needs root.
#   bench/ebpf-start.sh BEFORE_BINARY [AFTER_BINARY]     (AFTER defaults to bin/diffkeeper)
# BENCH_RUNS (default 5) runs per command for the workloads; `record -- true` runs 4x as many.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BEFORE=${1:?usage: bench/ebpf-start.sh BEFORE_BINARY [AFTER_BINARY]}
AFTER=${2:-$REPO/bin/diffkeeper}
RUNS=${BENCH_RUNS:-5}
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
command -v jq >/dev/null || apt-get install -y -qq jq >/dev/null
W=$(mktemp -d /tmp/dk-ebpf-start-XXXXXX)
mount -t tmpfs -o size=1g dk-ebpf-start "$W"
trap 'umount -l "$W"; rmdir "$W"' EXIT
cp "$BEFORE" "$W/dk-before"
cp "$AFTER" "$W/dk-after"
gcc -O2 -o "$W/writes16" "$REPO/bench/workloads/writes16.c"
gcc -O2 -o "$W/creates" "$REPO/bench/workloads/creates.c"
gcc -O2 -o "$W/paced" "$REPO/bench/workloads/paced.c"
mkdir -p "$W/ws" "$W/traces"
echo "load: $(uptime)"
table() { # table NAME JSON: mean, sigma, ratio to the first command
  local first
  first=$(jq '.results[0].mean' "$2")
  jq -r --argjson b "$first" --arg w "$1" \
    '.results[] | "| \($w) | \(.command) | \((.mean*1000)|floor) ± \((.stddev*1000)|floor) ms | \((.mean/$b*100|floor)/100)× |"' "$2"
}
echo "| workload | command | mean ± σ | ratio to the first |"
echo "|---|---|---|---|"
hyperfine --style basic --runs $((RUNS * 4)) --warmup 2 --export-json "$W/true.json" \
  --prepare "rm -rf '$W/ws' '$W/traces'; mkdir -p '$W/ws' '$W/traces'" \
  -n before "$W/dk-before record --quiet --capture ebpf --trace $W/traces/t --watch $W/ws -- true" \
  -n after "$W/dk-after record --quiet --capture ebpf --trace $W/traces/t --watch $W/ws -- true" >&2
table "record -- true" "$W/true.json"
for workload in "creates $W/ws 20000" "writes16 $W/ws 1000000"; do
  prog="$W/$workload"
  hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json "$W/w.json" \
    --prepare "rm -rf '$W/ws' '$W/traces'; mkdir -p '$W/ws' '$W/traces'" \
    -n bare "$prog" \
    -n before "$W/dk-before record --quiet --capture ebpf --trace $W/traces/t --watch $W/ws -- $prog" \
    -n after "$W/dk-after record --quiet --capture ebpf --trace $W/traces/t --watch $W/ws -- $prog" >&2
  table "${workload%% *}" "$W/w.json"
done
echo
echo "| binary | sustained 100,000 writes/s for 5 s: events recorded | lost |"
echo "|---|---|---|"
for which in before after; do
  rm -rf "$W/ws" "$W/traces"; mkdir -p "$W/ws" "$W/traces"
  "$W/dk-$which" record --quiet --capture ebpf --trace "$W/traces/p" --watch "$W/ws" -- "$W/paced" "$W/ws" 100000 5 2>&1 | sed 's/^/  /' >&2
  "$W/dk-$which" sessions --trace "$W/traces/p" --json | jq -r --arg b "$which" '"| \($b) | \(.events) | \(.lost_events) |"'
done
echo "load: $(uptime)"
