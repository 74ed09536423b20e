#!/usr/bin/env bash
# Redis with AOF (appendfsync always) under `diffkeeper run`: write keys, kill -9 the whole process group, delete
# the state directory (an emptyDir gone with its pod), start again: every key acknowledged more than one flush
# interval before the kill is back. Needs redis-server (apt install redis-server) and bin/diffkeeper (./build.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dk="${DIFFKEEPER_BIN:-$root/bin/diffkeeper}"
[ -x "$dk" ] || { echo "build diffkeeper first: ./build.sh" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "install redis-server first (apt-get install redis-server)" >&2; exit 1; }
work="$(mktemp -d /tmp/dk-redis-demo.XXXXXX)"
state="$work/data" store="$work/deltas" port="${PORT:-16379}" keys="${KEYS:-2000}"
echo "state dir $state (stands in for an emptyDir), store $store (stands in for a small PVC)"

start() {
  setsid "$dk" run --state-dir "$state" --store "$store" --flush-interval 100ms --metrics-addr none -- \
    redis-server --port "$port" --bind 127.0.0.1 --dir "$state" --appendonly yes --appendfsync always \
    --save "1 1" --logfile "" --daemonize no >"$work/run.log" 2>&1 &
  agent=$!
  until redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
}

start
echo "writing $keys keys"
for i in $(seq 1 "$keys"); do echo "SET key:$i value-$i"; done | redis-cli -p "$port" >/dev/null
sleep 0.2   # two flush intervals: everything acknowledged is in the store now
echo "kill -9 of the whole process group (agent and redis), then rm -rf the state dir"
kill -9 -- "-$agent"; wait "$agent" 2>/dev/null || true
rm -rf "$state"

start
grep 'restored' "$work/run.log" || true
n=$(redis-cli -p "$port" dbsize)
echo "after the kill and the wipe, redis has $n keys (wrote $keys); key:$keys = $(redis-cli -p "$port" get "key:$keys")"
kill -TERM "$agent"; wait "$agent" || true
"$dk" verify --trace "$store"
[ "$n" -eq "$keys" ] && echo "OK: nothing acknowledged was lost" || { echo "LOST $((keys - n)) keys"; exit 1; }
rm -rf "$work"
