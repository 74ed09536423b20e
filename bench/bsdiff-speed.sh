#!/usr/bin/env bash
# In-process speed of the bsdiff codec (suffix array, Diff, Patch) next to zstd with a prefix, on W1/W2-shaped
# data, or on pairs of files. Prints a markdown table; RUNS (default 15) samples per figure, median and minimum.
#   bench/bsdiff-speed.sh [RUNS [OLD NEW [OLD NEW ...]]]
set -euo pipefail
runs=${1:-15}
[ $# -gt 0 ] && shift
files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
cd "$(dirname "$0")/.."
dotnet run -c Release --project bench/BsDiffBench -- "$runs" ${files[@]+"${files[@]}"}
