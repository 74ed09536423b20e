# Sourced by the S3 benchmarks: starts a real s3rver on 127.0.0.1 with bucket $1 and data under a new temporary
# directory named after $2, and points the AWS variables at it. Sets dk (the binary), work (the directory, removed
# on exit with the server), port and server.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dk="${DIFFKEEPER_BIN:-$PWD/bin/diffkeeper}"
s3rver=tests/s3rver/node_modules/s3rver/bin/s3rver.js
[ -f "$s3rver" ] || { echo "s3rver is missing: source scripts/deps.sh && ensure_s3rver" >&2; exit 1; }
work="$(mktemp -d "/tmp/$2.XXXXXX")"
port=$((20000 + RANDOM % 20000))
node "$s3rver" -d "$work/s3" -a 127.0.0.1 -p "$port" --silent --configure-bucket "$1" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
