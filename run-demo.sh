#!/usr/bin/env bash
# run-demo.sh: DiffKeeper in one minute, on demo/flaky-ci-test.
#
# A "CI test" fails and, on its way out, corrupts the log that would have told you why. DiffKeeper records
# the run; this script then finds the moment right before the corruption in the timeline, rebuilds the
# tree as it was then and as it was at the end, and shows the two status.log files side by side.
#
# Works from any directory. Builds bin/diffkeeper first when it is missing or older than a source file
# (./build.sh: needs the .NET SDK; installs apt packages it lacks). Set DIFFKEEPER_DEMO_NO_BUILD=1 to use
# bin/diffkeeper as it is. Everything the demo writes goes to demo/flaky-ci-test/out/ (git-ignored),
# which is wiped on every run.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
# Paths relative to the repository root (the demo's cwd, except while recording), so the commands it
# prints can be pasted as they are.
DK=bin/diffkeeper
DEMO=demo/flaky-ci-test
OUT=$DEMO/out
WORK=$OUT/work
TRACE=$OUT/trace

if [ -t 1 ]; then B=$'\033[1m' D=$'\033[2m' N=$'\033[0m'; else B='' D='' N=''; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
# Prints a command the way you would type it (quoting '#12' and the like), then runs it.
q() { case $1 in *[!A-Za-z0-9_./:=,@%+-]* | '') printf "'%s'" "${1//\'/\'\\\'\'}" ;; *) printf '%s' "$1" ;; esac; }
run() {
  local a line=""
  for a in "$@"; do line+="${line:+ }$(q "$a")"; done
  printf '%s$ %s%s\n' "$D" "$line" "$N"
  "$@"
}

# --- 0. the tool ---------------------------------------------------------------------------------------
source scripts/deps.sh
# bin/diffkeeper loads the system libzstd.so.1 at run time.
if command -v dpkg-query >/dev/null 2>&1; then
  ensure_apt_packages libzstd1 diffutils
fi
stale=""
if [ ! -x "$DK" ]; then
  stale="bin/diffkeeper is missing"
elif [ -n "$(find src -type f -newer "$DK" -not -path '*/bin/*' -not -path '*/obj/*' -print -quit)" ]; then
  stale="bin/diffkeeper is older than the sources"
fi
if [ -n "$stale" ]; then
  if [ "${DIFFKEEPER_DEMO_NO_BUILD:-}" = 1 ] && [ -x "$DK" ]; then
    echo "note: $stale; using it anyway (DIFFKEEPER_DEMO_NO_BUILD=1)"
  else
    say "$stale: building it (./build.sh)"
    ./build.sh
  fi
fi

# --- 1. record the failing test ------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$WORK"
cp -R "$DEMO/seed" "$WORK/"

say "1. record the flaky CI test (it exits 1: that is the point)"
cd "$WORK"
set +e
run "$ROOT/$DK" record --trace "$ROOT/$TRACE" --watch "$ROOT/$WORK" -- "$ROOT/$DEMO/flaky_test.sh"
status=$?
set -e
cd "$ROOT"
echo "the test exited with status $status (expected 1)"
if [ "$status" -ne 1 ]; then
  echo "run-demo: expected the recorded test to exit 1, got $status" >&2
  exit 1
fi
echo
echo "what the CI log would show you: status.log as the test left it:"
sed 's/^/    | /' "$WORK/status.log"

# --- 2. the timeline -----------------------------------------------------------------------------------
say "2. the timeline: every change, in order"
run "$DK" timeline --trace "$TRACE"

# --- 3. find the moment right before the corruption ----------------------------------------------------
say "3. find the moment right before status.log was corrupted"
json="$OUT/timeline.jsonl"
"$DK" timeline --trace "$TRACE" --json >"$json"
# One JSON object per line. The corruption is the first TRUNCATE of status.log; the moment to rebuild is
# the event just before it (export --time '#N' means "right after event N").
hit=$(grep -n '"op":"TRUNCATE"' "$json" | grep -F '"path":"status.log"' | head -n 1 || true)
if [ -z "$hit" ]; then
  echo "run-demo: no TRUNCATE of status.log in the timeline ($json)" >&2
  exit 1
fi
line=${hit%%:*}
seq_of() { sed -n "${1}p" "$json" | sed -n 's/.*"seq":\([0-9][0-9]*\).*/\1/p'; }
bad=$(seq_of "$line")
if [ "$line" -le 1 ]; then
  echo "run-demo: the TRUNCATE is the first event: there is no moment before it" >&2
  exit 1
fi
before=$(seq_of $((line - 1)))
echo "first corruption of status.log:"
sed -n "${line}p" "$json" | sed 's/^/    /'
echo "so the last good moment is right after event #$before:"
sed -n "$((line - 1))p" "$json" | sed 's/^/    /'

# --- 4. rebuild both moments and compare ---------------------------------------------------------------
say "4. rebuild the tree right before the corruption (#$before) and at the end"
run "$DK" export --trace "$TRACE" --time "#$before" --out "$OUT/before"
run "$DK" export --trace "$TRACE" --time end --out "$OUT/after"

echo
echo "files that differ between the two moments:"
(cd "$OUT" && diff -rq before after | sed 's/^/    /') || true

echo
width=130
half=$(((width - 3) / 2))
left="status.log before corruption (#$before)" right="status.log at the end"
printf "%-${half}s   %s\n" "$left" "$right"
printf "%-${half}s   %s\n" "${left//?/-}" "${right//?/-}"
diff -y -t -W "$width" "$OUT/before/status.log" "$OUT/after/status.log" || true
echo
echo "The line that explains the failure ('row 4 missing') is gone from the real status.log;"
echo "the trace still has it."

# --- 5. the same without exporting a whole tree --------------------------------------------------------
say "5. one file at one moment, and one file's whole history"
run "$DK" show status.log --trace "$TRACE" --time "#$before"
echo
run "$DK" log status.log --trace "$TRACE"

# --- 6. something to look at ---------------------------------------------------------------------------
say "6. the report: one HTML file to open in a browser (offline)"
run "$DK" report --trace "$TRACE" --out "$OUT/report.html"

# --- done -----------------------------------------------------------------------------------------------
say "done"
rel=$TRACE
echo "The trace is in $rel (rebuilt trees: $OUT/before and $OUT/after; run commands from $ROOT)."
echo "Try next:"
echo "  bin/diffkeeper timeline --trace $rel --path 'data/**'"
echo "  bin/diffkeeper show db.lock --trace $rel            # the stale lock the test left behind"
echo "  bin/diffkeeper export --trace $rel --time 0.6s --out /tmp/at-0.6s"
echo "  bin/diffkeeper verify --trace $rel"
echo "  bin/diffkeeper timeline --trace $rel --format chrome-trace > /tmp/trace.json   # open in ui.perfetto.dev"
echo
echo "The report: $ROOT/$OUT/report.html"
