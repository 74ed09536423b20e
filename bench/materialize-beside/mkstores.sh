#!/usr/bin/env bash
# mkstores.sh MNT BIN W4DIR: snapshots of W4's v00..v04 (W4DIR/vNN/ckpt.bin, from /work/shared/bench/gen_workloads.py
# --only W4) into MNT/store by BIN (ids 1..5), and MNT/base = `materialize 4` (v03), checked with cmp. MNT is a mounted
# file system with reflinks (mkfs.xfs -m reflink=1 on a loop device, or mkfs.btrfs). Then matbench.py times
# `materialize 5 --base MNT/base` (v04 beside v03) against the durable full copy.
set -euo pipefail
mnt=$1; bin=$2; wl=$3
rm -rf "$mnt/store" "$mnt/base" "$mnt"/out-*
parent=()
for v in 00 01 02 03 04; do
  id=$("$bin" snapshot "$wl/v$v/ckpt.bin" --store "$mnt/store" "${parent[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  parent=(--parent "$id"); echo "v$v -> $id"
done
"$bin" materialize 4 --store "$mnt/store" --out "$mnt/base"
cmp "$mnt/base/ckpt.bin" "$wl/v03/ckpt.bin" && echo "base = v03"
