#!/usr/bin/env bash
# fuzz/make-corpus.sh: remakes fuzz/corpus from real recordings (fuzz/corpus/README.md). Needs root (eBPF) and
# bin/diffkeeper (./build.sh). Overwrites fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_dotnet
ensure_apt_packages python3
bin=$PWD/bin/diffkeeper
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The recorded job: a text file rewritten six times (deltas after gc), a rename, a symlink, a delete, 2 KiB of
# random bytes.
cat > "$work/job.sh" <<'JOB'
#!/bin/sh
cd "$1"
i=0
while [ $i -lt 6 ]; do
  seq 1 $((200 + i * 7)) | sed "s/^/line $i /" > notes.txt
  i=$((i+1))
  sleep 0.05
done
printf 'hello\n' > a.txt; mkdir -p sub; mv a.txt sub/b.txt; ln -s sub/b.txt link; rm -f notes.old
dd if=/dev/urandom of=blob.bin bs=1k count=2 status=none; printf 'tail' >> blob.bin
JOB
chmod +x "$work/job.sh"
for delta in zstd bsdiff; do
  mkdir "$work/w-$delta"
  "$bin" record --trace "$work/$delta" -w "$work/w-$delta" --no-compact --capture ebpf -q -- "$work/job.sh" "$work/w-$delta"
  "$bin" gc --trace "$work/$delta" --delta "$delta" --rebuild-bound 1000 >/dev/null
  # Small pages and no WAL: the catalog is a few KB, and a read-only open needs no sidecar files.
  python3 - "$work/$delta/catalog.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute('PRAGMA journal_mode=DELETE'); c.execute('PRAGMA page_size=512'); c.execute('VACUUM'); c.close()
PY
  rm -f "$work/$delta"/LOCK* "$work/$delta"/catalog.db-*
  "$bin" verify --read-data --trace "$work/$delta" >/dev/null
done

rm -rf fuzz/corpus/base fuzz/corpus/catalog fuzz/corpus/pack fuzz/corpus/zstd-delta fuzz/corpus/bsdiff \
  fuzz/corpus/extent-map fuzz/corpus/ebpf-record fuzz/corpus/event-run
mkdir -p fuzz/corpus/base
cp "$work/zstd/catalog.db" fuzz/corpus/base/
(cd "$work/zstd" && find packs -name '*.pack' -size +0 -print0 | xargs -0 cp --parents -t "$OLDPWD/fuzz/corpus/base")
dotnet run --project fuzz/DiffKeeper.Fuzz -c Release -- seed fuzz/corpus/base fuzz/corpus "$work/bsdiff"
rm -f fuzz/corpus/base/LOCK.readers
du -ab fuzz/corpus | sort -k2
