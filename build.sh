#!/usr/bin/env bash
# Publishes diffkeeper with NativeAOT to bin/diffkeeper: one native file, nothing unpacked at start, no HOME
# needed. At run time it needs only libraries Debian ships: libc, and (loaded when first used) libssl3 (libcrypto, only on a
# CPU without SHA instructions), libzstd1 and libbpf1; SQLite is linked in from libsqlite3-dev. Installs what the build or the binary lacks from apt (clang links the NativeAOT binary
# and compiles the eBPF program). Extra arguments go to `dotnet publish`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh
ensure_dotnet
ensure_apt_packages clang libzstd1 zstd bpftool libbpf-dev libbpf1 libsqlite3-0 libsqlite3-dev libssl3
dotnet publish src/DiffKeeper.Cli/DiffKeeper.Cli.csproj -c Release -o artifacts/publish --nologo -v quiet \
  -p:DebugType=none "$@"
mkdir -p bin
cp artifacts/publish/diffkeeper bin/diffkeeper.new
mv bin/diffkeeper.new bin/diffkeeper
# The man page is written from the command tree (the same text as --help): bin/diffkeeper.1, man -l bin/diffkeeper.1
bin/diffkeeper man-page > bin/diffkeeper.1
echo "built bin/diffkeeper ($(du -h bin/diffkeeper | cut -f1))"
