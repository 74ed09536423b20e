#!/usr/bin/env bash
# bench/compare-anchors.sh: DiffKeeper against bsdiff/bspatch, xdelta3, `zstd --patch-from`, restic and borg
# on the workloads W1-W4 of ../shared/bench/gen_workloads.py, in one run (issue 3, item 5).
#
#   bench/compare-anchors.sh [--only W1,W2] [--skip bsdiff,restic] [--runs N] [--keep]
#
# Installs what is missing from apt, generates the workloads into $BENCH_WORK/workloads (deterministic; kept and
# reused between runs), measures with bench/anchors.py (its header describes the methodology, which follows
# ../shared/bench/ANCHOR-RESULTS.md), prints a markdown report and writes it to
# bench/results/anchors-<UTC date>.md (+ .json with every sample). bench/results/ is git-ignored.
#
# Environment:
#   DIFFKEEPER       binary to measure (default: <repo>/bin/diffkeeper; build it with ./build.sh)
#   BENCH_WORK       scratch directory (default: <repo>/bench/.work, git-ignored); W1-W4 take ~2.6 GB there
#   GEN_WORKLOADS    the generator (default: <repo>/../shared/bench/gen_workloads.py)
#
# Time on the 2-core machine, idle: W1 ~1.5 min, W2 ~3 min (bsdiff alone stores 19 x 4.4 s), W3 ~2 min,
# W4 ~5 min (bsdiff is not run above 64 MiB: --bsdiff-max-mib). Peak RSS: GNU time's %M (ru_maxrss of the
# command and its children).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DK=${DIFFKEEPER:-$REPO/bin/diffkeeper}
WORK=${BENCH_WORK:-$REPO/bench/.work}
GEN=${GEN_WORKLOADS:-$REPO/../shared/bench/gen_workloads.py}
[ -e "$GEN" ] || GEN=/work/shared/bench/gen_workloads.py
ONLY=W1,W2,W3,W4
PASS=()
while [ $# -gt 0 ]; do
    case $1 in
        --only) ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        --skip|--runs|--bsdiff-max-mib) PASS+=("$1" "$2"); shift 2 ;;
        --keep) PASS+=("$1"); shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '== %s\n' "$*" >&2; }

need_apt() { # need_apt COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    say "$1 not found; installing $2 with apt-get"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq "$2" >/dev/null 2>&1 ||
        { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "$2" >/dev/null; }
    command -v "$1" >/dev/null 2>&1 || { echo "cannot install $2" >&2; exit 1; }
}
need_apt bsdiff bsdiff
need_apt xdelta3 xdelta3
need_apt zstd zstd
need_apt restic restic
need_apt borg borgbackup
need_apt hyperfine hyperfine
need_apt python3 python3
need_apt /usr/bin/time time
need_apt tar tar

[ -x "$DK" ] || { echo "no diffkeeper binary at $DK (run ./build.sh or set DIFFKEEPER)" >&2; exit 1; }
[ -e "$GEN" ] || { echo "no workload generator at $GEN (set GEN_WORKLOADS)" >&2; exit 1; }

mkdir -p "$WORK/workloads" "$REPO/bench/results"
say "generating $ONLY into $WORK/workloads (reused when already there)"
python3 "$GEN" "$WORK/workloads" --only "$ONLY" >&2

REPORT=$REPO/bench/results/anchors-$(date -u +%Y-%m-%dT%H%M%SZ).md
python3 "$REPO/bench/anchors.py" --workloads "$WORK/workloads" --work "$WORK" --only "$ONLY" \
    --diffkeeper "$DK" --report "$REPORT" ${PASS[@]+"${PASS[@]}"}
say "report written to $REPORT"
