#!/usr/bin/env bash
# Export and restore from S3 (a real s3rver on 127.0.0.1, tests/s3rver) against the same from a local trace/store,
# side by side in one run: wall time (median of RUNS, each from an empty cache), requests and bytes received.
# Trees: 61 files (1.2 MiB) and 64 MiB (4 files of 16 MiB). Then what a second session with the same files costs
# to upload (dedup), and what the first push sent. Usage: bench/s3-remote.sh   (results on stdout; docs/benchmarks.md quotes them). RUNS=N (default 5).
set -euo pipefail
source "$(dirname "$0")/s3rver-start.sh" bench dk-s3-bench
export DIFFKEEPER_S3_STATS=1
export DIFFKEEPER_CACHE="$work/setup-cache"   # the writers' cache; every timed read gets an empty one of its own
runs="${RUNS:-5}"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/s3-remote.sh  ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }

make_tree() {  # name dir
  mkdir -p "$2"
  case "$1" in
    61-files) mkdir -p "$2/sub"; for i in $(seq 1 60); do head -c $((i * 640)) /dev/urandom > "$2/sub/f$i"; done; head -c 100000 /dev/urandom > "$2/top" ;;
    64MiB)    for i in $(seq 1 4); do head -c $((16 << 20)) /dev/urandom > "$2/part$i"; done ;;
  esac
}

printf '| tree | operation | local (ms) | S3 (ms) | S3/local | S3 requests | bytes received |\n|---|---|---|---|---|---|---|\n'
for tree in 61-files 64MiB; do
  t="$work/$tree/tree"
  make_tree "$tree" "$t"
  # a trace: recorded locally, pushed
  (cd "$t" && "$dk" record -q --trace "$work/$tree/trace" -- true)
  pushed=$("$dk" push "$work/$tree/trace" "s3://bench/$tree-trace" | tail -1)   # "N requests (...), X bytes sent, Y received"
  # a keep-mode store: written by run into the bucket
  "$dk" run -q --state-dir "$t" --store "s3://bench/$tree-store" --metrics-addr none -- true 2>/dev/null
  "$dk" run -q --state-dir "$t" --store "$work/$tree/store" --metrics-addr none -- true 2>/dev/null

  local_ms=$(for i in $(seq "$runs"); do rm -rf "$work/out"; ms "$dk" export --trace "$work/$tree/trace" --out "$work/out"; done | median)
  s3_ms=$(for i in $(seq "$runs"); do rm -rf "$work/out" "$work/cache"; DIFFKEEPER_CACHE="$work/cache" ms "$dk" export --trace "s3://bench/$tree-trace" --out "$work/out"; done | median)
  stats=$(grep '^diffkeeper: s3: ' "$work/err" | sed -E 's/.*s3: ([0-9]+) requests.*received.*/\1/'); bytes=$(grep '^diffkeeper: s3: ' "$work/err" | sed -E 's/.* ([0-9]+) received/\1/')
  printf '| %s | export | %s | %s | %.2fx | %s | %s |\n' "$tree" "$local_ms" "$s3_ms" "$(echo "$s3_ms / $local_ms" | bc -l)" "$stats" "$bytes"

  local_ms=$(for i in $(seq "$runs"); do rm -rf "$work/state"; mkdir "$work/state"; ms "$dk" restore --state-dir "$work/state" --store "$work/$tree/store"; done | median)
  s3_ms=$(for i in $(seq "$runs"); do rm -rf "$work/state" "$work/cache"; mkdir "$work/state"; DIFFKEEPER_CACHE="$work/cache" ms "$dk" restore --state-dir "$work/state" --store "s3://bench/$tree-store"; done | median)
  stats=$(grep '^diffkeeper: s3: ' "$work/err" | sed -E 's/.*s3: ([0-9]+) requests.*received.*/\1/'); bytes=$(grep '^diffkeeper: s3: ' "$work/err" | sed -E 's/.* ([0-9]+) received/\1/')
  printf '| %s | restore | %s | %s | %.2fx | %s | %s |\n' "$tree" "$local_ms" "$s3_ms" "$(echo "$s3_ms / $local_ms" | bc -l)" "$stats" "$bytes"

  # dedup: a second session over the same files
  (cd "$t" && "$dk" record -q --trace "$work/$tree/trace" -- true)
  second=$("$dk" push "$work/$tree/trace" "s3://bench/$tree-trace" | grep 'uploaded as' | sed -E 's/.*\(([0-9]+) bytes\).*/\1/')
  first=$(du -sb "$work/s3/bench/$tree-trace/packs" | cut -f1)
  echo "| $tree | first push | | | | $(echo "$pushed" | sed -E 's/^([0-9]+) requests.*/\1/') | $(echo "$pushed" | sed -E 's/.* ([0-9]+) bytes sent.*/\1/') bytes sent |"
  echo "| $tree | second session's upload | | | | | $second new pack bytes (the bucket's packs: $first bytes) |"
done
