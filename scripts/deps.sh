# Sourced by build.sh, test.sh and run-demo.sh: installs what a fresh Debian machine lacks.
ensure_apt_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_dotnet() {
  if ! command -v dotnet >/dev/null 2>&1; then
    echo "the .NET 10 SDK is required (https://dot.net); it is not on PATH" >&2
    exit 1
  fi
}

# The S3 server the remote-store tests start (tests/s3rver: npm package s3rver, pinned by its lockfile).
ensure_s3rver() {
  [ -f tests/s3rver/node_modules/s3rver/bin/s3rver.js ] && return 0
  command -v npm >/dev/null 2>&1 || ensure_apt_packages nodejs npm
  echo "installing s3rver (npm ci in tests/s3rver)"
  (cd tests/s3rver && npm ci --no-audit --no-fund --silent) || echo "s3rver could not be installed: the remote-store tests will be skipped" >&2
}
