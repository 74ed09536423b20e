#!/usr/bin/env bash
# What retention (`run --max-versions`) costs capture: two workloads under `diffkeeper run`, each without and with
# `--max-versions 3 --retention-interval 1s`, /metrics scraped near the end. Reports the flush lag, how late cuts
# started after they were due (diffkeeper_cut_delay_seconds), and the retention steps the agent ran between cuts.
#   steady: bench/steady_writer.py, 1,000 appends a second to one file for 20 s
#   edit:   tests/.../retention_writer.py, a 1 MiB file a tenth rewritten every 20 ms for 20 s (compaction works)
# Usage: bench/keep-retention.sh  (results go to stdout; docs/benchmarks.md quotes them)
set -euo pipefail
cd "$(dirname "$0")/.."
dk="${DIFFKEEPER_BIN:-$PWD/bin/diffkeeper}"
work="$(mktemp -d /tmp/dk-retention-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/keep-retention.sh  ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"

one() {  # workload retention(yes|no) port
  local w="$work/$1-$2"; mkdir -p "$w/data"
  local opts=(); [ "$2" = yes ] && opts=(--max-versions 3 --retention-interval 1s)
  local app
  case "$1" in
    steady) app=(python3 bench/steady_writer.py "$w/data" 1000 20) ;;
    edit)   app=(sh -c "timeout 20 python3 tests/DiffKeeper.IntegrationTests/Keep/retention_writer.py '$w/data' 0 1048576 edit 0.02 '$w/e' '$w/d' '$w/r'; true") ;;
  esac
  "$dk" run --state-dir "$w/data" --store "$w/store" --metrics-addr "127.0.0.1:$3" "${opts[@]}" -- "${app[@]}" 2>"$w/log" &
  local agent=$!
  sleep 19
  curl -s "http://127.0.0.1:$3/metrics" > "$w/metrics" || true
  wait "$agent" || true
  python3 - "$w/metrics" "$1" "$2" "$(du -sb "$w/store/packs" | cut -f1)" <<'PY'
import sys, re
text, workload, retention, packs = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], int(sys.argv[4])
def value(name):
    return float(re.search(r'(?m)^' + name + r' (\S+)', text).group(1))
def pct(name, p):
    buckets = [(float('inf') if m.group(1) == '+Inf' else float(m.group(1)), float(m.group(2)))
               for m in re.finditer(r'(?m)^' + name + r'_bucket\{le="([^"]+)"\} (\S+)', text)]
    total = buckets[-1][1]
    return next(le for le, c in buckets if c >= p * total) * 1000
lag_n = value('diffkeeper_flush_lag_seconds_count')
cut_n = value('diffkeeper_cut_delay_seconds_count')
print(f"| {workload} | {retention} | {int(value('diffkeeper_cuts_total'))} | "
      f"{value('diffkeeper_flush_lag_seconds_sum') / lag_n * 1000:.1f} ms | <= {pct('diffkeeper_flush_lag_seconds', 0.99):g} ms | "
      f"{value('diffkeeper_cut_delay_seconds_sum') / cut_n * 1000:.2f} ms | <= {pct('diffkeeper_cut_delay_seconds', 0.99):g} ms | "
      f"{value('diffkeeper_cut_delay_max_seconds') * 1000:.1f} ms | {int(value('diffkeeper_gc_runs_total'))} | {int(value('diffkeeper_gc_steps_total'))} | "
      f"{value('diffkeeper_gc_step_max_seconds') * 1000:.2f} ms | {value('diffkeeper_gc_step_seconds_total') * 1000:.0f} ms | {packs / 1048576:.1f} MiB |")
PY
}

echo "| workload | retention | cuts | flush lag mean | p99 | cut delay mean | p99 | max | passes | steps | longest step | steps in all | packs at the end |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
port=39941
for workload in ${WORKLOADS-steady edit}; do
  for retention in no yes; do
    one "$workload" "$retention" "$port"
    port=$((port + 1))
  done
done
