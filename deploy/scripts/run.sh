#!/usr/bin/env bash
# `make run`: migrate, make sure there is an API key, start the API and a worker, print how to use them.
# Ctrl-C stops everything this script started (PostgreSQL too, when it started it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bin=${LECTOR_BIN:?LECTOR_BIN must name the built lector binary}
port=${LECTOR_HTTP_PORT:-8080}
host=${LECTOR_HTTP_HOST:-127.0.0.1}
mkdir -p .run

pg_state=$(deploy/scripts/pg.sh start)
db_name=${LECTOR_DATABASE_URL##*/}
deploy/scripts/pg.sh createdb "${db_name%%\?*}"
"$bin" migrate >/dev/null

# Reuse the key of the last `make run` while it still works; otherwise make a new one.
key=""
[[ -s .run/api-key ]] && key=$(cat .run/api-key)
if [[ -z "$key" ]] || ! "$bin" keys list 2>/dev/null | awk -F'\t' '$5 == "-" {print $3}' | grep -q "^${key:0:15}_"; then
  key=$("$bin" keys create --user local 2>/dev/null)
  (umask 077; printf '%s\n' "$key" > .run/api-key)
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "$pg_state" == started ]]; then deploy/scripts/pg.sh stop; fi
  echo "stopped"
}
trap cleanup INT TERM EXIT

"$bin" serve & pids+=($!)
"$bin" work & pids+=($!)

for _ in $(seq 1 100); do
  curl -fs "http://$host:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://$host:$port/readyz" >/dev/null || { echo "the API did not become ready" >&2; exit 1; }

cat <<MSG

Lector is running. Paste these two lines into a shell:

LECTOR_URL=http://$host:$port
LECTOR_API_KEY=$key

Then submit a document and fetch its text (the result waits up to 30 s for the job to end):

curl -s -H "Authorization: Bearer \$LECTOR_API_KEY" -F document=@page.png \$LECTOR_URL/v1/jobs
curl -sL -H "Authorization: Bearer \$LECTOR_API_KEY" "\$LECTOR_URL/v1/jobs/<id>/result?format=txt&wait=30"

Ctrl-C stops the API, the worker and the database.
MSG

wait -n "${pids[@]}" || true
