#!/usr/bin/env bash
# Publishes the self-contained single-file diffkeeper (ReadyToRun) to bin/diffkeeper.
# Installs the .NET SDK's missing native dependency (libzstd1) from apt when it is absent.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh
ensure_dotnet
ensure_apt_packages libzstd1 zstd clang bpftool libbpf-dev libbpf1
dotnet publish src/DiffKeeper.Cli/DiffKeeper.Cli.csproj -c Release -o artifacts/publish --nologo -v quiet \
  -p:DebugType=none "$@"
mkdir -p bin
cp artifacts/publish/diffkeeper bin/diffkeeper.new
mv bin/diffkeeper.new bin/diffkeeper
echo "built bin/diffkeeper ($(du -h bin/diffkeeper | cut -f1))"
