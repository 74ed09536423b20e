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

# Installs the npm packages a directory's package-lock.json pins (npm ci) when node_modules is missing or older
# than the lockfile; installs node and npm from apt first when they are missing. Leaves a warning, not a failure,
# when it cannot: the tests that need the packages then skip and say why.
ensure_npm_dir() {
  local dir=$1
  command -v node >/dev/null 2>&1 || ensure_apt_packages nodejs
  command -v npm >/dev/null 2>&1 || ensure_apt_packages npm
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "installing the npm packages of $dir (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || echo "warning: npm ci failed in $dir; the tests that need it will skip" >&2
  fi
}

# The S3 server the remote-store tests start (tests/s3rver: npm package s3rver, pinned by its lockfile).
ensure_s3rver() {
  ensure_npm_dir tests/s3rver
}
