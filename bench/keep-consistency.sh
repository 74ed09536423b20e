#!/usr/bin/env bash
# Keep mode's consistency, measured: see keep_consistency.py. Usage: bench/keep-consistency.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
dk="${DIFFKEEPER_BIN:-$PWD/bin/diffkeeper}"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/keep-consistency.sh ${1:-20}"
python3 bench/keep_consistency.py "$dk" "${1:-20}"
