#!/usr/bin/env bash
# Restore time of keep mode against `cp -a` of the same tree, in the same run (hyperfine), for four trees:
# 1 file of 10 MiB, 61 files (1.2 MiB), 10,000 small files, 256 MiB (16 files of 16 MiB). Each tree is put in a
# store by `diffkeeper run -- true` (its baseline); each measured restore starts from an empty directory.
# Then the flush lag under a steady 1,000 writes/s (bench/steady_writer.py), read from /metrics.
# Usage: bench/keep-restore.sh  (results go to stdout; docs/benchmarks.md quotes them)
# TREES='' skips the restore part; RUNS=N sets hyperfine's runs (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
dk="${DIFFKEEPER_BIN:-$PWD/bin/diffkeeper}"
work="$(mktemp -d /tmp/dk-keep-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/keep-restore.sh  ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"

make_tree() {  # name
  local t="$work/$1/tree"; mkdir -p "$t"
  case "$1" in
    one-10MiB) head -c $((10 << 20)) /dev/urandom > "$t/big.bin" ;;
    61-files)  mkdir -p "$t/sub"; for i in $(seq 1 60); do head -c $((i * 640)) /dev/urandom > "$t/sub/f$i"; done; head -c 100000 /dev/urandom > "$t/top" ;;
    10k-small) for d in $(seq 1 100); do mkdir -p "$t/d$d"; for f in $(seq 1 100); do echo "file $d/$f $RANDOM" > "$t/d$d/f$f"; done; done ;;
    256MiB)    for i in $(seq 1 16); do head -c $((16 << 20)) /dev/urandom > "$t/part$i"; done ;;
  esac
  "$dk" run -q --state-dir "$t" --store "$work/$1/store" --metrics-addr none -- true 2>/dev/null
}

for tree in ${TREES-one-10MiB 61-files 10k-small 256MiB}; do
  make_tree "$tree"
  w="$work/$tree"
  hyperfine -N --warmup 1 --runs "${RUNS:-10}" --style basic --export-markdown "$w/result.md" \
    --prepare "rm -rf $w/out" \
    -n "diffkeeper restore ($tree)" "$dk restore --state-dir $w/out --store $w/store" \
    -n "cp -a ($tree)" "cp -a $w/tree $w/out" >/dev/null
  cat "$w/result.md"; echo
done

# Flush lag: a writer appending 1,000 lines a second to one file and rewriting a small file, for 20 s.
mkdir -p "$work/lag/data"
"$dk" run --state-dir "$work/lag/data" --store "$work/lag/store" --metrics-addr 127.0.0.1:39919 -- \
  python3 bench/steady_writer.py "$work/lag/data" 1000 20 2>"$work/lag/log" &
agent=$!
sleep 19
curl -s http://127.0.0.1:39919/metrics > "$work/lag/metrics" || true
wait "$agent" || true
python3 - "$work/lag/metrics" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
buckets = [(float('inf') if m.group(1) == '+Inf' else float(m.group(1)), float(m.group(2)))
           for m in re.finditer(r'(?m)^diffkeeper_flush_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', text)]
total = buckets[-1][1]
def pct(p):
    for le, c in buckets:
        if c >= p * total:
            return le
lag_sum = float(re.search(r'(?m)^diffkeeper_flush_lag_seconds_sum (\S+)', text).group(1))
freeze = float(re.search(r'(?m)^diffkeeper_freeze_seconds_total (\S+)', text).group(1))
cuts = float(re.search(r'(?m)^diffkeeper_cuts_total (\S+)', text).group(1))
print(f"flush lag under 1,000 writes/s (changes committed: {int(total)}, cuts: {int(cuts)}): mean {lag_sum / total * 1000:.1f} ms, "
      f"p50 <= {pct(0.5) * 1000:g} ms, p90 <= {pct(0.9) * 1000:g} ms, p99 <= {pct(0.99) * 1000:g} ms (histogram bucket bounds); "
      f"app stopped {freeze:.2f} s in all ({freeze / cuts * 1000:.1f} ms per cut)")
PY
