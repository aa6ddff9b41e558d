#!/usr/bin/env bash
# Start a private SeaweedFS `weed mini` S3 store on 127.0.0.1 for the S3Kit tests.
#
#   ./start_weed.sh            # start (idempotent), prints the env to export
#   ./start_weed.sh stop       # SIGTERM the one this script started (by its pid file)
#
# Every port is set explicitly (no defaults like 8333/9333/8888/6060/23646), from S3KIT_WEED_BASE
# (default 18430): master B, volume B+1, filer B+2, S3 B+3, admin B+4, each gRPC port +10000.
# (mini opens the admin listener even with -admin.ui=false, so it is moved too.)
# Admin UI, WebDAV, Iceberg and Lance listeners are disabled; local sockets and logs live in the
# state folder, so nothing is written to /tmp. Virtual-host addressing works as
# http://BUCKET.s3.localhost:PORT (the tests map that name to 127.0.0.1 with AsyncHTTPClient's dnsOverride).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base="${S3KIT_WEED_BASE:-18430}"
state="${S3KIT_WEED_DIR:-$here/.weed}"
weed="${WEED:-$here/.venv/bin/weed}"
access="${S3KIT_TEST_ACCESS_KEY:-s3kitaccess}"
secret="${S3KIT_TEST_SECRET_KEY:-s3kitsecret0123456789}"
bucket="${S3KIT_TEST_BUCKET:-s3kit-test}"
s3port=$((base + 3))

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$state/weed.pid" ]]; then
    pid="$(cat "$state/weed.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # up to 30 s
    rm -f "$state/weed.pid"
  fi
  exit 0
fi

mkdir -p "$state/data" "$state/logs"
cat > "$state/s3.json" <<JSON
{"identities":[{"name":"s3kit","credentials":[{"accessKey":"$access","secretKey":"$secret"}],
 "actions":["Admin","Read","List","Tagging","Write"]}]}
JSON

if [[ -f "$state/weed.pid" ]] && kill -0 "$(cat "$state/weed.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$state/weed.pid"))" >&2
else
  "$weed" -logdir="$state/logs" mini \
    -dir="$state/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=$((base)) -master.port.grpc=$((base + 10000)) \
    -volume.port=$((base + 1)) -volume.port.grpc=$((base + 10001)) \
    -filer.port=$((base + 2)) -filer.port.grpc=$((base + 10002)) \
    -s3.port=$s3port -s3.port.grpc=$((base + 10003)) \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -admin.port=$((base + 4)) -admin.port.grpc=$((base + 10004)) \
    -webdav=false -admin.ui=false \
    -filer.localSocket="$state/filer.sock" -s3.localSocket="$state/s3.sock" \
    -s3.config="$state/s3.json" -bucket="$bucket" -s3.domainName=s3.localhost \
    >"$state/logs/stdout.log" 2>&1 &
  echo $! > "$state/weed.pid"
  # Wait until S3 answers (any HTTP status means it is up).
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null "http://127.0.0.1:$s3port/"; then break; fi
    sleep 0.2
  done
  # The bucket is created asynchronously; wait until a HEAD on it is not 404.
  for _ in $(seq 1 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -I "http://127.0.0.1:$s3port/$bucket" || true)"
    [[ "$code" != "404" && "$code" != "000" ]] && break
    sleep 0.2
  done
fi
echo "export S3KIT_TEST_ENDPOINT=http://127.0.0.1:$s3port"
echo "export S3KIT_TEST_ACCESS_KEY=$access"
echo "export S3KIT_TEST_SECRET_KEY=$secret"
echo "export S3KIT_TEST_BUCKET=$bucket"
echo "export S3KIT_TEST_REGION=us-east-1"
echo "export S3KIT_TEST_VHOST_DOMAIN=s3.localhost"
