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

pids=()
pg_state=""
status=0
cleanup() {
  trap '' INT TERM        # a second Ctrl-C must not interrupt the clean-up
  trap - EXIT
  if [[ ${#pids[@]} -gt 0 ]]; then
    echo
    echo "stopping the API and the worker (jobs in flight finish first)..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  if [[ "$pg_state" == started ]]; then deploy/scripts/pg.sh stop; fi
  echo "stopped"
  exit "$status"
}
trap cleanup INT TERM
trap 'rc=$?; [[ $status -ne 0 ]] || status=$rc; cleanup' EXIT

pg_state=$(deploy/scripts/pg.sh start)
url=${LECTOR_DATABASE_URL%%\?*}
deploy/scripts/pg.sh createdb "${url##*/}"
"$bin" migrate >/dev/null

# Reuse the key of the last `make run` while it is still live; otherwise make a new one.
key=""
[[ -s .run/api-key ]] && key=$(cat .run/api-key)
if [[ -z "$key" ]] || ! "$bin" keys list 2>/dev/null | awk -F'\t' '$5 == "-" {print $3}' | grep -qF "${key:0:15}_"; then
  key=$("$bin" keys create --user local 2>/dev/null)
  (umask 077; printf '%s\n' "$key" > .run/api-key)
fi

"$bin" serve & pids+=($!)
"$bin" work & pids+=($!)

for _ in $(seq 1 100); do
  curl -fs "http://$host:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fs "http://$host:$port/readyz" >/dev/null; then
  echo "the API did not become ready on http://$host:$port (is the port taken? set LECTOR_HTTP_PORT)" >&2
  status=1
  exit 1
fi

cat <<MSG

Lector is running. Paste these two lines into a shell:

LECTOR_URL=http://$host:$port
LECTOR_API_KEY=$key

Then submit a document and fetch its text (the result waits up to 30 s for the job to end):

curl -s -H "Authorization: Bearer \$LECTOR_API_KEY" -F document=@page.png \$LECTOR_URL/v1/jobs
curl -sL -H "Authorization: Bearer \$LECTOR_API_KEY" "\$LECTOR_URL/v1/jobs/<id>/result?format=txt&wait=30"

Ctrl-C stops the API, the worker and the database.
MSG

# Returns when a child exits: with 0 when it was asked to stop (Ctrl-C reaches the whole process group),
# otherwise it crashed and the status says so. Either way the EXIT trap stops the rest.
wait -n "${pids[@]}" || status=$?
if [[ $status -ne 0 ]]; then echo "a Lector process exited with status $status" >&2; fi
