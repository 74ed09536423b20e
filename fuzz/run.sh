#!/usr/bin/env bash
# fuzz/run.sh TARGET MINUTES: fuzzes one reader with AFL++ through SharpFuzz for MINUTES minutes, then prints the
# executions, coverage and findings, and replays every crash and hang once (the exception of each).
# Targets: catalog pack zstd-delta bsdiff extent-map ebpf-record event-run (fuzz/README.md says what each feeds where).
# Installs what is missing: Debian's afl++, and the sharpfuzz .NET tool (SharpFuzz.CommandLine 2.3.0).
# At low priority (nice 19): the fuzzer takes idle CPU only. Output: artifacts/fuzz/TARGET (RESUME=1 continues it).
# Environment: FUZZ_TIMEOUT_MS (default 10000: one input slower than this is a hang), FUZZ_HEAP (the .NET heap
# limit, default 512 MiB: an allocation above it fails, and that is a crash).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

targets="catalog pack zstd-delta bsdiff extent-map ebpf-record event-run"
target=${1:-}
minutes=${2:-}
if [ -z "$target" ] || [ -z "$minutes" ] || ! [[ " $targets " == *" $target "* ]] || ! [[ "$minutes" =~ ^[0-9]+$ ]]; then
  echo "usage: fuzz/run.sh TARGET MINUTES   (TARGET: ${targets// /, })" >&2
  exit 2
fi

ensure_dotnet
ensure_apt_packages afl++ libzstd1 libbpf1 libsqlite3-0 clang bpftool libbpf-dev
export PATH="$PATH:$HOME/.dotnet/tools"
if ! command -v sharpfuzz >/dev/null 2>&1; then
  echo "installing the sharpfuzz tool (dotnet tool)"
  dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0 >/dev/null
fi

bin=artifacts/fuzz/bin/$target
out=artifacts/fuzz/$target
base=$PWD/fuzz/corpus/base
mkdir -p artifacts/fuzz
# One build at a time (two targets may start together); each target gets its own copy, instrumented: sharpfuzz
# rewrites the assemblies in place and refuses to do it twice.
(
  flock 9
  dotnet publish fuzz/DiffKeeper.Fuzz/DiffKeeper.Fuzz.csproj -c Release -o artifacts/fuzz/build --nologo -v quiet
  rm -rf "$bin"
  mkdir -p "$bin"
  cp -a artifacts/fuzz/build/. "$bin/"
) 9>artifacts/fuzz/.build.lock
for dll in DiffKeeper.Core DiffKeeper.Storage DiffKeeper.Replay DiffKeeper.Capture; do
  sharpfuzz "$bin/$dll.dll" >/dev/null
done

if [ "${RESUME:-0}" = 1 ] && [ -d "$out" ]; then
  export AFL_AUTORESUME=1
else
  rm -rf "$out"
fi
mkdir -p "$out"
echo "fuzzing $target for $minutes minutes (nice 19); afl-fuzz output in $out"
started=$(date -u +%FT%TZ)
# dotnet is not an AFL-instrumented binary (the IL is): skip afl-fuzz's check; no core_pattern or CPU governor
# changes on a shared machine.
AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 \
  DOTNET_GCHeapHardLimit=${FUZZ_HEAP:-0x20000000} DOTNET_TieredPGO=0 \
  nice -n 19 afl-fuzz -i "fuzz/corpus/$target" -o "$out" -t "${FUZZ_TIMEOUT_MS:-10000}" -m none -V $((minutes * 60)) \
  -- dotnet "$bin/DiffKeeper.Fuzz.dll" "$target" "$base" > "$out/afl-fuzz.log" 2>&1 || {
    echo "afl-fuzz failed; the end of $out/afl-fuzz.log:" >&2
    tail -20 "$out/afl-fuzz.log" >&2
    exit 1
  }

stats=$out/default/fuzzer_stats
stat() { sed -n "s/^$1 *: *//p" "$stats"; }
crashes=$(find "$out/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
hangs=$(find "$out/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
echo "target $target  started $started  ran $(stat run_time) s  execs $(stat execs_done)  execs/s $(stat execs_per_sec)" \
  " corpus $(stat corpus_count) paths  coverage $(stat bitmap_cvg)  crashes $crashes  hangs $hangs"
if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
  DOTNET_GCHeapHardLimit=${FUZZ_HEAP:-0x20000000} dotnet "$bin/DiffKeeper.Fuzz.dll" replay "$target" "$base" \
    $(find "$out/default/crashes" "$out/default/hangs" -name 'id:*') || true
  exit 3
fi
