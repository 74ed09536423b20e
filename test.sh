#!/usr/bin/env bash
# Sets up what is missing, builds bin/diffkeeper, runs every test project, and ends with one line:
# "N passed, N failed, N skipped". Exits non-zero when anything failed (or did not build).
set -uo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh
ensure_dotnet
ensure_apt_packages libzstd1 zstd
# keep-mode tests: a real Redis and SQLite (python3's sqlite3), promtool (Debian's prometheus package) checks /metrics
ensure_apt_packages redis-server prometheus python3
# the HTML report is opened in a real headless browser: Debian's chromium, driven by npm's playwright-core
ensure_apt_packages chromium
ensure_npm_dir tests/report-browser
# the catalog rewrite's crash test (CatalogRewriteCrashTests) kills and fails `record` at chosen system calls with strace
ensure_apt_packages strace
# remote-store tests: a real S3 server (s3rver, on node)
ensure_s3rver

./build.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

results=artifacts/test-results
rm -rf "$results"
mkdir -p "$results"
export DIFFKEEPER_BIN="$PWD/bin/diffkeeper"
broken=0
for proj in tests/*/*.csproj; do
  name=$(basename "$proj" .csproj)
  echo "== $name"
  if ! dotnet test "$proj" -c Release --nologo -v quiet \
      --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=normal" \
      --results-directory "$results" 2>&1 | grep -vE '^\s*$|^\s+(Passed|at) ' ; then
    :
  fi
  if [ ! -s "$results/$name.trx" ]; then
    echo "!! $name produced no results (build failure?)"
    broken=$((broken + 1))
  fi
done

count() { cat "$results"/*.trx 2>/dev/null | grep -o "<UnitTestResult [^>]*outcome=\"$1\"" | wc -l; }
passed=$(count Passed)
failed=$(( $(count Failed) + broken ))
skipped=$(count NotExecuted)
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
