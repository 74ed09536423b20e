#!/usr/bin/env bash
# The whole-process floor: how long a .NET program published like diffkeeper (NativeAOT) takes to print one
# line and exit, beside /bin/true (the floor of any process), diffkeeper's own cheapest commands and the C tools
# several targets compare against (cp -a, zstd -d) on tiny inputs, in one hyperfine run. Also prints the size of
# each binary. A target "<= k x tool" whose tool takes less than floor/k cannot be met by any whole process here.
# Usage: bench/startup-floor.sh   (RUNS=N, default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_dotnet
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
dk="${DIFFKEEPER_BIN:-$PWD/bin/diffkeeper}"
work="$(mktemp -d /tmp/dk-floor.XXXXXX)"
trap 'rm -rf "$work"' EXIT
dotnet publish bench/startup-floor/Hello.csproj -c Release -o "$work/hello" --nologo -v quiet -p:DebugType=none >/dev/null
mkdir -p "$work/src"
head -c 64 /dev/urandom > "$work/src/tiny"
zstd -q "$work/src/tiny" -o "$work/tiny.zst"
"$dk" record -q --capture scan --trace "$work/trace" --watch "$work/src" -- true
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  bench/startup-floor.sh  ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
hyperfine -N --warmup 3 --runs "${RUNS:-30}" --style basic --export-markdown "$work/floor.md" \
  --prepare "rm -rf $work/out $work/cp $work/t2 $work/unz" \
  -n "/bin/true" "/bin/true" \
  -n "hello (.NET NativeAOT floor)" "$work/hello/Hello" \
  -n "diffkeeper --version" "$dk --version" \
  -n "diffkeeper export (64 B file)" "$dk export --trace $work/trace --out $work/out" \
  -n "diffkeeper record -- true (empty dir)" "$dk record -q --capture inotify --trace $work/t2 --watch $work/src -- true" \
  -n "cp -a (64 B file)" "cp -a $work/src $work/cp" \
  -n "zstd -d (64 B file)" "zstd -q -d $work/tiny.zst -o $work/unz" >&2
cat "$work/floor.md"
echo
echo "sizes: diffkeeper $(stat -c %s "$dk") B, hello $(stat -c %s "$work/hello/Hello") B"
