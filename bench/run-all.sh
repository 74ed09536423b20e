#!/usr/bin/env bash
# bench/run-all.sh: all DiffKeeper benchmarks of issue 2 in one run.
#
#   1. recording overhead: 20,000 small file creates and 100,000 appends of
#      100 bytes, bare vs under `diffkeeper record` (inotify backend);
#   2. ingest throughput: 1 GiB of unique random data taken in by the baseline
#      scan of `diffkeeper record ... -- true`, vs `dd conv=fdatasync`;
#   3. export: one 10 MiB file and 1,000 files of 4 KiB, vs `cp -a`.
#
# Prints a markdown table of results with ratios (also saved to
# bench/results/summary.md); raw hyperfine JSON goes to bench/results/*.json
# the hyperfine output to bench/results/hyperfine.log and `vmstat 5` during
# the run to bench/results/vmstat.log (bench/results/ is git-ignored). Work files live in bench/results/tmp, on
# the same filesystem as the repository, and are removed at the end.
#
# Environment:
#   DIFFKEEPER           binary to measure (default: <repo>/bin/diffkeeper)
#   BENCH_RUNS           runs per command for overhead/export (default 10; min 5)
#   BENCH_INGEST_RUNS    runs per command for the 1 GiB ingest (default 5)
#   BENCH_SETTLE_SECONDS how long after the last deletion of bench work files
#                        to start (default 370; see the note on ext4 below)
#   BENCH_KEEP=1         keep bench/results/tmp afterwards
#
# Note on ext4 without a journal (as on the machine these were first run on):
# the inode allocator skips inodes freed in the last 60 s, or 360 s while
# their inode-table block is dirty (and creating files in that block dirties
# it), testing each such inode again on every create (fs/ext4/ialloc.c,
# recently_deleted). Creating 20,000 files soon after deleting many in the
# same block group is then up to ten times slower. So the benchmarks never
# delete between runs: --prepare renames the previous output into tmp/trash
# (a rename frees no inode), and everything is deleted at the end, followed
# by sync. A run starting less than BENCH_SETTLE_SECONDS after the last such
# deletion (time kept in bench/results/.last-delete) waits out the rest, and
# a leftover tmp is deleted first. Deletions by other processes (a build,
# say) can still slow the create benchmark; the per-run times in
# bench/results/creates.json show it. Each group of benchmarks starts with
# sync, so that write-back of the previous group's files does not run into it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$REPO/bench
RESULTS=$BENCH/results
TMP=$RESULTS/tmp
DK=${DIFFKEEPER:-$REPO/bin/diffkeeper}
RUNS=${BENCH_RUNS:-10}
INGEST_RUNS=${BENCH_INGEST_RUNS:-5}
SETTLE=${BENCH_SETTLE_SECONDS:-370}

say() { printf '== %s\n' "$*" >&2; }

# --- tools ---------------------------------------------------------------
need_apt() { # need_apt COMMAND PACKAGE: install PACKAGE with apt-get when COMMAND is missing
    command -v "$1" >/dev/null 2>&1 && return 0
    say "$1 not found; installing $2 with apt-get"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y "$2" >/dev/null 2>&1 ||
        { $sudo apt-get update >/dev/null && $sudo apt-get install -y "$2" >/dev/null; }
    command -v "$1" >/dev/null 2>&1 || { echo "cannot install $2" >&2; exit 1; }
}
need_apt hyperfine hyperfine
need_apt jq jq
need_apt gcc gcc
[ -x "$DK" ] || { echo "no diffkeeper binary at $DK (set DIFFKEEPER)" >&2; exit 1; }
[ "$RUNS" -ge 5 ] || RUNS=5

# --- work directory --------------------------------------------------------
mkdir -p "$RESULTS"
STAMP=$RESULTS/.last-delete   # when bench work files were last deleted
if [ -e "$TMP" ]; then
    say "deleting leftover $TMP"
    rm -rf "$TMP"
    sync
    date +%s > "$STAMP"
fi
if [ -s "$STAMP" ]; then
    wait_s=$(( $(cat "$STAMP") + SETTLE - $(date +%s) ))
    if [ "$wait_s" -gt 0 ]; then
        say "work files were deleted recently; waiting ${wait_s}s for ext4 to settle"
        sleep "$wait_s"
    fi
fi
mkdir -p "$TMP/trash"
cleanup() {
    [ "${BENCH_KEEP:-0}" = 1 ] && return
    rm -rf "$TMP"
    sync
    date +%s > "$STAMP"
}
trap cleanup EXIT

# prepare_cmd DIR...: a --prepare command that renames each DIR (if present)
# into the trash, so that the next run starts without it.
prepare_cmd() {
    local s='n=$(date +%s%N)'
    local d
    for d in "$@"; do
        s+="; if [ -e '$d' ]; then mv '$d' '$TMP/trash/'\"\$n\"'.$(basename "$d")'; fi"
    done
    printf '%s' "$s"
}

# --- workloads -------------------------------------------------------------
say "compiling workloads"
gcc -O2 -Wall -Wextra -o "$RESULTS/creates" "$BENCH/workloads/creates.c"
gcc -O2 -Wall -Wextra -o "$RESULTS/appends" "$BENCH/workloads/appends.c"

: > "$RESULTS/hyperfine.log"
# CPU and I/O of the whole machine every 5 s, to spot interference afterwards
if command -v vmstat >/dev/null 2>&1; then
    vmstat -t 5 > "$RESULTS/vmstat.log" &
    VMSTAT_PID=$!
    trap 'kill "$VMSTAT_PID" 2>/dev/null; cleanup' EXIT
fi
FS=$(df -T "$TMP" | awk 'NR==2 {print $2 " on " $1 " (" $7 ")"}')
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# mean/stddev of command N (0-based) of a hyperfine JSON file, in seconds
mean() { jq -r ".results[$2].mean" "$1"; }
sdev() { jq -r ".results[$2].stddev" "$1"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
hf() { # hf NAME RUNS [hyperfine args...]
    local name=$1 runs=$2; shift 2
    hyperfine --style basic --runs "$runs" --warmup 1 \
        --export-json "$RESULTS/$name.json" "$@" | tee -a "$RESULTS/hyperfine.log" >&2
}

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }

# --- 1. recording overhead ----------------------------------------------------
overhead() { # overhead NAME LABEL PROGRAM
    local name=$1 label=$2 prog=$3 ws=$TMP/$1-ws tr=$TMP/$1-trace
    say "overhead: $label"
    sync
    hf "$name" "$RUNS" \
        --prepare "$(prepare_cmd "$ws" "$tr"); mkdir '$ws'" \
        -n "bare" "$prog '$ws'" \
        --prepare "$(prepare_cmd "$ws" "$tr"); mkdir '$ws'" \
        -n "recorded" "'$DK' record --quiet --capture inotify --trace '$tr' --watch '$ws' -- $prog '$ws'"
    local b r
    b=$(mean "$RESULTS/$name.json" 0); r=$(mean "$RESULTS/$name.json" 1)
    local x; x=$(ratio "$r" "$b")
    local met=no; le "$x" 1.5 && met=yes
    row "$label" "bare: $(ms "$b") ± $(ms "$(sdev "$RESULTS/$name.json" 0)") ms" \
        "recorded: $(ms "$r") ± $(ms "$(sdev "$RESULTS/$name.json" 1)") ms" "**${x}×**" "≤ 1.5×" "$met"
}
overhead creates "Overhead: 20,000 creates of 100 B" "'$RESULTS/creates'"
overhead appends "Overhead: 100,000 appends of 100 B" "'$RESULTS/appends'"

# --- 2. export ------------------------------------------------------------------
say "export: preparing sources and traces"
mkdir -p "$TMP/exp-one" "$TMP/exp-many"
head -c 10M /dev/urandom > "$TMP/exp-one/big.bin"
for d in $(seq -w 0 9); do
    mkdir -p "$TMP/exp-many/d$d"
    for f in $(seq -w 0 99); do
        head -c 4096 /dev/urandom > "$TMP/exp-many/d$d/f$f.bin"
    done
done
"$DK" record --quiet --trace "$TMP/exp-one-trace" --watch "$TMP/exp-one" -- true
"$DK" record --quiet --trace "$TMP/exp-many-trace" --watch "$TMP/exp-many" -- true

export_bench() { # export_bench NAME LABEL
    local name=$1 label=$2 src=$TMP/$1 tr=$TMP/$1-trace out=$TMP/$1-out cpo=$TMP/$1-cp
    say "export: $label"
    sync
    hf "$name" "$RUNS" \
        --prepare "$(prepare_cmd "$cpo")" \
        -n "cp -a" "cp -a '$src' '$cpo'" \
        --prepare "$(prepare_cmd "$out")" \
        -n "export" "'$DK' export --trace '$tr' --time end --out '$out'"
    local c e x met=no
    c=$(mean "$RESULTS/$name.json" 0); e=$(mean "$RESULTS/$name.json" 1)
    x=$(ratio "$e" "$c"); le "$x" 2 && met=yes
    # the time export reports itself ("... in N ms"), over RUNS separate runs
    local i line inproc=() sum=0
    for i in $(seq 1 "$RUNS"); do
        eval "$(prepare_cmd "$out")"
        line=$("$DK" export --trace "$tr" --time end --out "$out" 2>&1 >/dev/null | tail -n 1)
        inproc+=("$(sed -n 's/.* in \([0-9][0-9]*\) ms$/\1/p' <<<"$line")")
    done
    printf '%s\n' "${inproc[@]}" > "$RESULTS/$name-inprocess-ms.txt"
    local im; im=$(printf '%s\n' "${inproc[@]}" | awk '{ s += $1 } END { printf "%.1f", s / NR }')
    row "$label" "cp -a: $(ms "$c") ± $(ms "$(sdev "$RESULTS/$name.json" 0)") ms" \
        "export: $(ms "$e") ± $(ms "$(sdev "$RESULTS/$name.json" 1)") ms (in-process: $im ms)" \
        "**${x}×** (in-process: $(ratio "$(awk -v m="$im" 'BEGIN { print m / 1000 }')" "$c")×)" "≤ 2×" "$met"
}
export_bench exp-one "Export: one 10 MiB file"
export_bench exp-many "Export: 1,000 files of 4 KiB"

# --- 3. ingest --------------------------------------------------------------------
say "ingest: generating 1 GiB of random data"
mkdir -p "$TMP/ingest-src" "$TMP/ingest-dd"
head -c 1G /dev/urandom > "$TMP/ingest-src/random.bin"
say "ingest: measuring"
sync
hf ingest "$INGEST_RUNS" \
    --prepare "rm -f '$TMP/ingest-dd/copy'; sync" \
    -n "dd conv=fdatasync" "dd if='$TMP/ingest-src/random.bin' of='$TMP/ingest-dd/copy' bs=4M conv=fdatasync status=none" \
    --prepare "rm -rf '$TMP/ingest-trace'; sync" \
    -n "record baseline" "'$DK' record --quiet --trace '$TMP/ingest-trace' --watch '$TMP/ingest-src' -- true"
d=$(mean "$RESULTS/ingest.json" 0); r=$(mean "$RESULTS/ingest.json" 1)
mibs() { awk -v s="$1" 'BEGIN { printf "%.0f", 1024 / s }'; }
x=$(ratio "$d" "$r"); met=no; le 0.3 "$x" && met=yes
row "Ingest: 1 GiB unique random data" \
    "dd: $(ms "$d") ± $(ms "$(sdev "$RESULTS/ingest.json" 0)") ms = $(mibs "$d") MiB/s" \
    "record: $(ms "$r") ± $(ms "$(sdev "$RESULTS/ingest.json" 1)") ms = $(mibs "$r") MiB/s (whole process)" "**${x}×** of dd" "≥ 0.3×" "$met"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- summary ------------------------------------------------------------------------
{
    echo "Date: $DATE  "
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, filesystem $FS  "
    echo "Versions: $("$DK" --version 2>/dev/null | head -n 1) (commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')), $(hyperfine --version)  "
    echo "Runs: $RUNS per command (overhead, export), $INGEST_RUNS (ingest), 1 warm-up each; load average at start $LOAD_START, at end $LOAD_END"
    echo
    echo "| Benchmark | Baseline (mean ± σ) | DiffKeeper (mean ± σ) | Ratio | Target | Met |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$RESULTS/summary.md"
