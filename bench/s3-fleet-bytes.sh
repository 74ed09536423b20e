#!/usr/bin/env bash
# Issue 16's acceptance workload, measured in bytes: 20 sessions of the flaky demo recorded by `record --trace
# s3://…` into one bucket (a real s3rver on 127.0.0.1), the first alone, the other 19 by 4 concurrent processes.
# For each session: the pack bytes it uploaded and every byte it sent (packs, indexes, segment, manifest).
# Two workloads: the demo as it is (a few hundred bytes of files), and the demo plus the same 2 MiB fixture in
# every copy (RemoteStoreTests' workload). Usage: bench/s3-fleet-bytes.sh   (TRACES=N, default 20)
set -euo pipefail
source "$(dirname "$0")/s3rver-start.sh" fleet dk-s3-fleet
traces="${TRACES:-20}"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/s3-fleet-bytes.sh  ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"

one() {  # workload prefix n  -> "n pack_bytes bytes_sent requests"
  local w="$work/$1-$3"
  mkdir -p "$w/seed"; cp demo/flaky-ci-test/flaky_test.sh "$w/"; cp demo/flaky-ci-test/seed/users.csv "$w/seed/"
  [ "$1" = fixture ] && head -c $((2 << 20)) "$work/fixture" > "$w/seed/fixture.bin"
  local err; err=$(cd "$w" && DIFFKEEPER_CACHE="$work/cache-$1-$(( $3 % 4 ))" "$dk" record --trace "s3://fleet/$2" -- bash flaky_test.sh 2>&1 >/dev/null || true)
  local line; line=$(grep 'uploaded to' <<<"$err") || { echo "session $3: $err" >&2; exit 1; }
  echo "$3 $(sed -E 's/.*new blobs \(([0-9]+) bytes\).*/\1/' <<<"$line") $(sed -E 's/.* ([0-9]+) bytes sent.*/\1/' <<<"$line") $(sed -E 's/.*; ([0-9]+) requests.*/\1/' <<<"$line")"
}
head -c $((2 << 20)) /dev/urandom > "$work/fixture"
printf '| workload | first session: pack bytes / bytes sent / requests | later sessions (%s): bytes sent, max / median | max later / first (bytes sent) |\n|---|---|---|---|\n' "$((traces - 1))"
for workload in demo fixture; do
  first=$(one "$workload" "$workload" 1)
  for worker in 0 1 2 3; do
    ( for i in $(seq $((2 + worker)) 4 "$traces"); do one "$workload" "$workload" "$i"; done ) > "$work/$workload-w$worker" &
  done
  wait $(jobs -p | grep -v "^$server$") 2>/dev/null || true
  cat "$work/$workload"-w* | sort -n > "$work/$workload-later"
  [ "$(wc -l < "$work/$workload-later")" -eq $((traces - 1)) ] || { echo "only $(wc -l < "$work/$workload-later") later sessions" >&2; exit 1; }
  read -r _ fp fs fr <<<"$first"
  max=$(awk '{print $3}' "$work/$workload-later" | sort -n | tail -1)
  med=$(awk '{print $3}' "$work/$workload-later" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '| %s | %s / %s / %s | %s / %s | %.3f |\n' "$workload" "$fp" "$fs" "$fr" "$max" "$med" "$(echo "$max / $fs" | bc -l)"
done
