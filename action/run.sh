#!/usr/bin/env bash
# The steps of action.yml. Inputs arrive as environment variables (DK_*), never pasted into this text.
#   run.sh build    build diffkeeper from the action's checkout (NativeAOT, ./build.sh) and put it on PATH
#   run.sh record   run DK_COMMAND under diffkeeper record; always exits 0 so the upload steps run, and writes
#                   exit-code, trace, artifact, upload and report to $GITHUB_OUTPUT; with DK_REPORT=true writes
#                   `diffkeeper report` to <trace>-report.html and a summary to $GITHUB_STEP_SUMMARY
#   run.sh finish   exit with DK_EXIT_CODE (the command's exit code)
set -euo pipefail

fail() {
  echo "::error::diffkeeper action: $*" >&2
  exit 2
}

build() {
  "$GITHUB_ACTION_PATH/build.sh"
  echo "$GITHUB_ACTION_PATH/bin" >> "$GITHUB_PATH"
}

# A few lines for the job's summary page: the exit, the report's name (when there is one), the end of the timeline.
summary() {
  [ -n "${GITHUB_STEP_SUMMARY:-}" ] || return 0
  {
    echo "### DiffKeeper: the command exited $1"
    echo
    if [ -n "$3" ]; then
      echo "Report: \`$(basename "$3")\` (uploaded with the trace when the trace is; one HTML file, opens offline)."
      echo
    fi
    echo '```'
    diffkeeper timeline --trace "$2" | tail -n 15
    echo '```'
  } >> "$GITHUB_STEP_SUMMARY" || echo "::warning::diffkeeper action: could not write the job summary"
}

record() {
  [ -n "${DK_COMMAND:-}" ] || fail "the command input is empty"
  local upload="${DK_UPLOAD:-on-failure}" report="${DK_REPORT:-true}"
  case "$upload" in on-failure|always|never) ;; *) fail "upload must be on-failure, always or never, got '$upload'" ;; esac
  case "$report" in true|false) ;; *) fail "report must be true or false, got '$report'" ;; esac

  local trace
  trace=$(realpath -m -- "${DK_TRACE:-diffkeeper-trace}")
  local args=(record --trace "$trace")
  local dir
  while read -r dir; do
    [ -z "$dir" ] || args+=(--watch "$dir")
  done <<< "${DK_WATCH:-}"
  [ -z "${DK_CAPTURE:-}" ] || args+=(--capture "$DK_CAPTURE")

  local code=0
  diffkeeper "${args[@]}" -- bash --noprofile --norc -eo pipefail -c "$DK_COMMAND" || code=$?

  # The report sits beside the trace (not inside it: the trace directory is the recorder's).
  local report_file=""
  if [ "$report" = true ]; then
    report_file="$trace-report.html"
    if ! diffkeeper report --trace "$trace" --out "$report_file"; then
      echo "::warning::diffkeeper report failed; the trace is still uploaded"
      report_file=""
    fi
  fi
  summary "$code" "$trace" "$report_file"

  local do_upload=false
  if [ "$upload" = always ] || { [ "$upload" = on-failure ] && [ "$code" -ne 0 ]; }; then
    do_upload=true
  fi

  # Artifact names must be unique in a run: the job, its matrix index, the attempt and the trace's name.
  local artifact="diffkeeper-${GITHUB_JOB:-job}${DK_JOB_INDEX:+-$DK_JOB_INDEX}-${GITHUB_RUN_ATTEMPT:-1}-$(basename "$trace")"
  artifact="${artifact//[^A-Za-z0-9._-]/_}"
  {
    echo "exit-code=$code"
    echo "trace=$trace"
    echo "artifact=$artifact"
    echo "upload=$do_upload"
    echo "report=$report_file"
  } >> "${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
  echo "diffkeeper action: the command exited $code; trace at $trace (upload: $do_upload)"
}

finish() {
  [[ "${DK_EXIT_CODE:-}" =~ ^[0-9]+$ ]] || fail "the record step left no exit code"
  exit "$DK_EXIT_CODE"
}

case "${1:-}" in
  build) build ;;
  record) record ;;
  finish) finish ;;
  *) fail "usage: run.sh build|record|finish" ;;
esac
