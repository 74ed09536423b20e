#!/usr/bin/env bash
# Why a process start costs what it does here: the price of one page fault (bench/fault-cost.c) and the faults and
# CPU time of /bin/true, the NativeAOT hello (bench/startup-floor) and `diffkeeper --version`, from `perf stat`.
# Usage: bench/fault-cost.sh   (RUNS=N, default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_dotnet
command -v gcc >/dev/null || apt-get install -y -qq gcc >/dev/null
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
dk="${DIFFKEEPER_BIN:-$PWD/bin/diffkeeper}"
work="$(mktemp -d /tmp/dk-faults.XXXXXX)"
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/fault-cost" bench/fault-cost.c
dotnet publish bench/startup-floor/Hello.csproj -c Release -o "$work/hello" --nologo -v quiet -p:DebugType=none >/dev/null
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/fault-cost.sh  ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(dmesg 2>/dev/null | grep -o 'Hypervisor detected: .*' | head -1 || true))"
"$work/fault-cost"
echo "| command | page faults | task-clock (ms) | elapsed (ms) |"
echo "|---|---:|---:|---:|"
for cmd in /bin/true "$work/hello/Hello" "$dk --version"; do
  name="${cmd/#$work\/hello\/Hello/hello}"; name="${name/#$dk/diffkeeper}"
  perf stat -x, -r "${RUNS:-50}" -e page-faults,task-clock $cmd 2>"$work/stat" >/dev/null
  faults=$(awk -F, '$3=="page-faults"{print $1}' "$work/stat")
  clock=$(awk -F, '$3=="task-clock"{printf "%.2f", $1}' "$work/stat")
  perf stat -r "${RUNS:-50}" $cmd 2>"$work/stat2" >/dev/null
  elapsed=$(awk '/seconds time elapsed/{printf "%.2f", $1*1000}' "$work/stat2")
  echo "| \`$name\` | $faults | $clock | $elapsed |"
done
