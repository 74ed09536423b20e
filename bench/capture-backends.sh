#!/usr/bin/env bash
# bench/capture-backends.sh: recording overhead of each capture backend, side by side in one hyperfine run
# per workload: 1,000,000 writes of 16 bytes to one file, 20,000 creates of 100-byte files, unpacking a tarball
# of ~8,000 files and `make -j2` of a 121-file C project, each bare and under
# `diffkeeper record --capture ebpf|fanotify|inotify`; then the events and losses of ebpf and fanotify at a
# steady 100,000 writes a second. Work files go to a tmpfs
# mounted for the run (so disk write-back does not dominate); results to bench/results/capture-*.json and a
# markdown table on stdout. Needs root for eBPF and the mount. BENCH_RUNS (default 5) runs per command;
# BENCH_ONLY (writes16, creates, tarball, make or paced, comma-separated) runs only those workloads.
set -euo pipefail
case ${1:-} in
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) echo "capture-backends.sh takes no arguments (settings are environment variables: see --help)" >&2; exit 2 ;;
esac
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
gcc -O2 -o "$W/paced" "$REPO/bench/workloads/paced.c" 2>/dev/null
# Real workloads: a source tarball of the system's C headers (about 8,000 files, 130 MB) and a C project of
# 120 generated files built with make -j2 (objects and the program go to the watched directory).
tar -cf "$W/src.tar" -C /usr include
mkdir -p "$W/proj"
for i in $(seq 1 120); do
  {
    echo "#include <stdio.h>"
    echo "#include <string.h>"
    for f in 1 2 3 4 5 6; do
      echo "int f${i}_$f(const char *s) { int h = $i; for (size_t k = 0; k < strlen(s); k++) h = h * 31 + s[k] + $f; return h; }"
    done
  } > "$W/proj/m$i.c"
done
echo "int main(void) { return 0; }" > "$W/proj/main.c"
cat > "$W/proj/Makefile" <<'MAKE'
SRC := $(wildcard *.c)
OBJ := $(patsubst %.c,$(OUT)/%.o,$(SRC))
$(OUT)/app: $(OBJ)
	gcc -o $@ $^
$(OUT)/%.o: %.c
	gcc -O1 -c $< -o $@
MAKE
mkdir -p "$W/ws" "$W/traces"
n=0
ONLY=${BENCH_ONLY:-}
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
run() { # run NAME WORKLOAD-COMMAND
  local name=$1 prog=$2
  wanted "$name" || return 0
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
run tarball "tar -xf $W/src.tar -C $W/ws"
run make "make -s -j2 -C $W/proj OUT=$W/ws"

# Losses at a steady rate: 100,000 writes of 16 bytes a second for 5 s (paced in 1 ms slices).
wanted paced || exit 0
echo
echo "| backend | sustained 100,000 writes/s for 5 s: events recorded | lost |"
echo "|---|---|---|"
for backend in ebpf fanotify; do
  rm -rf "$W/ws" "$W/traces"; mkdir -p "$W/ws" "$W/traces"
  "$DK" record --quiet --capture "$backend" --trace "$W/traces/p" --watch "$W/ws" -- "$W/paced" "$W/ws" 100000 5 2>&1 | sed 's/^/  /' >&2
  "$DK" sessions --trace "$W/traces/p" --json | jq -r --arg b "$backend" '"| \($b) | \(.events) | \(.lost_events) |"'
done
