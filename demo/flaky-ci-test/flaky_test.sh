#!/usr/bin/env bash
# flaky_test.sh: a small, deterministic "CI integration test" that fails and then destroys its own evidence.
#
# Works in the current directory and expects seed/users.csv there. In order it:
#   1. "connects" and takes the database lock (db.lock), logging each step to status.log;
#   2. "migrates": turns seed/users.csv into data/users.json;
#   3. checks the result and logs the real failure (a seed row is missing);
#   4. then a buggy "log rotation" helper silently corrupts status.log: it cuts the file in the middle of
#      its first line (truncate) and appends a line of garbage. The lock is never released;
#   5. exits 1 ("test failed"): the only evidence left is a mangled status.log and a stale db.lock.
#
# bash + coreutils only, no randomness. The short sleeps only keep the recorded timeline readable.
# The corruption is the only time status.log ever shrinks, so it is the first TRUNCATE of status.log
# in the timeline: run-demo.sh relies on that.
set -euo pipefail

log() { printf '%s\n' "$*" >>status.log; }
pause() { sleep 0.25; }

[ -f seed/users.csv ] || { echo "flaky_test: seed/users.csv not found in $PWD" >&2; exit 2; }
echo "flaky_test: running in $PWD"

# Step 1: connect and take the lock.
log "step 1: connecting to db at localhost:5432"
pause
log "step 1: connected (server 16.4)"
printf 'pid=4242 host=ci-runner-7 taken-at=step-1\n' >db.lock
log "step 1: lock taken (db.lock)"
pause

# Step 2: migrate the seed data.
log "step 2: migrating seed/users.csv -> data/users.json"
mkdir -p data
{
  echo '['
  sep=''
  while IFS=, read -r id name email; do
    [ "$id" = "id" ] && continue # header
    [ -n "$id" ] || continue     # row 4 of the seed is empty: the bug under test
    printf '%s  {"id": %s, "name": "%s", "email": "%s"}' "$sep" "$id" "$name" "$email"
    sep=$',\n'
  done <seed/users.csv
  printf '\n]\n'
} >data/users.json
log "step 2: migrated $(grep -c '"id"' data/users.json) users"
pause

# Step 3: the checks. The real reason for the failure is logged here...
log "step 3: check users: expected 4, found 3 (row 4 missing)"
log "step 3: FAILED, see data/users.json"
pause

# Step 4: ...and then a buggy "log rotation" helper silently corrupts status.log: it cuts the file in the
# middle of its first line, then appends garbage.
truncate -s 23 status.log
pause
log "#?!%~ rotate: kept 0 lines ~%!?#"
pause

# db.lock is never released: the next CI run on this runner would find a stale lock and fail too.
echo "flaky_test: FAILED (status.log: '$(head -c 40 status.log | tr -d '\n')...')" >&2
exit 1
