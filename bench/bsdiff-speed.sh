#!/usr/bin/env bash
# In-process speed of the bsdiff codec (suffix array, Diff, Patch) next to zstd with a prefix, on W1/W2-shaped
# data. Prints a markdown table; RUNS (default 15) samples per figure, median and minimum.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet run -c Release --project bench/BsDiffBench -- "${1:-15}"
