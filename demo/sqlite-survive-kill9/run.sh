#!/usr/bin/env bash
# SQLite in WAL mode with synchronous=FULL, committing numbered transactions under `diffkeeper run` while it
# checkpoints every few dozen commits; killed with SIGKILL at a random moment, state directory wiped, restored
# with `diffkeeper restore`: PRAGMA integrity_check is ok and every acknowledged transaction is there.
# Needs python3 and bin/diffkeeper (./build.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dk="${DIFFKEEPER_BIN:-$root/bin/diffkeeper}"
workload="$root/tests/DiffKeeper.IntegrationTests/Keep/sqlite_workload.py"
check="$root/tests/DiffKeeper.IntegrationTests/Keep/sqlite_check.py"
[ -x "$dk" ] || { echo "build diffkeeper first: ./build.sh" >&2; exit 1; }
work="$(mktemp -d /tmp/dk-sqlite-demo.XXXXXX)"
state="$work/data" store="$work/deltas" rounds="${ROUNDS:-5}"
for round in $(seq 1 "$rounds"); do
  setsid "$dk" run --state-dir "$state" --store "$store" --flush-interval 100ms --metrics-addr none -- \
    python3 "$workload" "$state/app.db" >"$work/acks" 2>"$work/run.log" &
  agent=$!
  sleep "0.$((RANDOM % 8 + 2))"
  kill -9 -- "-$agent"; wait "$agent" 2>/dev/null || true
  sleep 0.2   # let the dead group go
  acked=$(tail -n 1 "$work/acks" 2>/dev/null || echo 0)
  rm -rf "$state"
  "$dk" restore --state-dir "$state" --store "$store"
  result=$(python3 "$check" "$state/app.db")
  echo "round $round: last acknowledged transaction $acked (some of the last 100 ms may be missing); restored database: $result"
  case "$result" in ok*) ;; *) echo "DAMAGED"; exit 1 ;; esac
done
"$dk" verify --trace "$store"
rm -rf "$work"
