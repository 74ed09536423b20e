#!/usr/bin/env bash
# bench/bigfiles.sh: big and sparse files (issue 15) on W4 (256 MiB fp32 checkpoint, 5 versions, 5% of 1 MiB blocks
# rewritten) and W5 (1 GiB sparse image, 64 MiB of 4 KiB pages, 1% of pages rewritten) from
# ../shared/bench/gen_workloads.py, side by side in one run:
#
#   store a later version:  diffkeeper snapshot --parent   vs  zstd -3 --long --patch-from=prev   vs  cp (SEEK_DATA)
#   stored bytes:           the store (packs + catalog)    vs  v00.zst + the patches
#   rebuild the last one:   diffkeeper materialize (copy)  vs  the zstd chain (v00 + 4 patches)   vs  cp of it
#   beside the previous:    materialize vN --base vN-1 on a loop-mounted xfs (reflink=1) vs a full copy there, with and
#                           without an fsync of the copy (materialize fsyncs its output)
#   keep mode:              the app's freeze per cut for a 1 GiB sparse file vs a 1 MiB file, same writes per cut, with
#                           each backend of --keep-capture (default inotify,ebpf: eBPF's written ranges spare the read of
#                           the unwritten blocks)
#
#   bench/bigfiles.sh [--only W4,W5|none] [--runs N] [--no-keep] [--no-reflink] [--keep-capture inotify,ebpf]
#
# Every figure is a median over --runs passes (default 3) of each version 1-4; each step is preceded by an untimed
# `sync`; timings include process start (as the anchors' do). Results: a markdown table on stdout and in
# bench/results/bigfiles-<UTC date>.md. Needs root for the loop mount (skipped with the reason otherwise).
# Environment: DIFFKEEPER (binary, default <repo>/bin/diffkeeper), BENCH_WORK (scratch, default <repo>/bench/.work;
# W4+W5 take ~1.5 GB apparent, ~0.7 GB allocated), GEN_WORKLOADS (the generator).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DK=${DIFFKEEPER:-$REPO/bin/diffkeeper}
WORK=${BENCH_WORK:-$REPO/bench/.work}
GEN=${GEN_WORKLOADS:-$REPO/../shared/bench/gen_workloads.py}
[ -e "$GEN" ] || GEN=/work/shared/bench/gen_workloads.py
ONLY=W4,W5
RUNS=3
KEEP=1
KEEP_CAPTURE=inotify,ebpf
REFLINK=1
while [ $# -gt 0 ]; do
    case $1 in
        --only) ONLY=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --no-keep) KEEP=0; shift ;;
        --no-reflink) REFLINK=0; shift ;;
        --keep-capture) KEEP_CAPTURE=$2; shift 2 ;;
        *) echo "usage: $0 [--only W4,W5] [--runs N] [--no-keep] [--no-reflink] [--keep-capture inotify,ebpf]" >&2; exit 2 ;;
    esac
done

source "$REPO/scripts/deps.sh"
ensure_apt_packages zstd xfsprogs python3
[ -x "$DK" ] || { echo "$DK is missing: run ./build.sh" >&2; exit 1; }
mkdir -p "$WORK" "$REPO/bench/results"
[ "$ONLY" = none ] || python3 "$GEN" "$WORK/workloads" --only "$ONLY" >&2
exec python3 "$REPO/bench/bigfiles.py" --dk "$DK" --work "$WORK" --only "$ONLY" --runs "$RUNS" --keep "$KEEP" --keep-capture "$KEEP_CAPTURE" --reflink "$REFLINK" \
    --out "$REPO/bench/results/bigfiles-$(date -u +%Y%m%dT%H%M%SZ).md"
