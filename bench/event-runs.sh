#!/usr/bin/env bash
# bench/event-runs.sh OLD NEW [RUNS]: two diffkeeper binaries side by side, alternating, on a tmpfs: `record
# --quiet --capture ebpf` of 1,000,000 writes of 16 B (bench/workloads/writes16.c), of 20,000 creates of 100 B
# and of an untar of /usr/include (bench/capture-backends.sh's workloads), plus the bare runs. Prints one line per
# run: workload, binary, wall s, user s, sys s, max RSS KiB, trace bytes, catalog bytes, events-table bytes
# (sqlite3 dbstat). ONLY="writes16 creates untar" (default) picks workloads. Store format 7 (write runs) was
# measured with it. Needs root (eBPF, the mount).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OLD=$1 NEW=$2 RUNS=${3:-5}
W=$(mktemp -d /tmp/dk-runs-XXXXXX)
mount -t tmpfs -o size=3g dk-runs "$W"
trap 'umount -l "$W"; rmdir "$W"' EXIT
gcc -O2 -o "$W/writes16" "$REPO/bench/workloads/writes16.c"
gcc -O2 -o "$W/creates" "$REPO/bench/workloads/creates.c"
tar -cf "$W/src.tar" -C /usr include
one() { # one WORKLOAD NAME BINARY|bare COMMAND...
  local wl=$1 name=$2 bin=$3; shift 3
  rm -rf "$W/ws" "$W/t"; mkdir -p "$W/ws"
  local out
  if [ "$bin" = bare ]; then
    /usr/bin/time -o "$W/time" -f '%e %U %S %M' "$@" >/dev/null 2>&1
    out=$(cat "$W/time")
    echo "$wl $name $out - - -"
  else
    /usr/bin/time -o "$W/time" -f '%e %U %S %M' "$bin" record --quiet --capture ebpf --trace "$W/t" --watch "$W/ws" -- "$@" >/dev/null 2>&1
    out=$(cat "$W/time")
    local trace catalog events
    trace=$(du -sb "$W/t" | cut -f1)
    catalog=$(stat -c %s "$W/t/catalog.db")
    events=$(sqlite3 "$W/t/catalog.db" "SELECT sum(pgsize) FROM dbstat WHERE name = 'events'")
    echo "$wl $name $out $trace $catalog $events"
  fi
}
ONLY=${ONLY:-writes16 creates untar}
for i in $(seq 1 "$RUNS"); do
  for wl in $ONLY; do
    case $wl in
      writes16) cmd=("$W/writes16" "$W/ws" 1000000) ;;
      creates) cmd=("$W/creates" "$W/ws" 20000) ;;
      untar) cmd=(tar -xf "$W/src.tar" -C "$W/ws") ;;
      *) echo "unknown workload $wl" >&2; exit 2 ;;
    esac
    one "$wl" bare bare "${cmd[@]}"
    one "$wl" old "$OLD" "${cmd[@]}"
    one "$wl" new "$NEW" "${cmd[@]}"
  done
done
