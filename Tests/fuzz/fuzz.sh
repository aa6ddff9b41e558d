#!/usr/bin/env bash
# Fuzzes the live API with schemathesis, driven by our own OpenAPI document: every generated request must get
# a documented status, a body that matches its schema, and never a 5xx.
#
#   Tests/fuzz/fuzz.sh [EXAMPLES [MIN_CASES]]   examples per operation, and the fewest test cases that count
#                                                as a run (make fuzz: 100 and 1000; make test: 20 and 200)
#
# schemathesis comes from PyPI into the git-ignored .venv-fuzz; the server runs on its own database.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
examples=${1:-100}
min_cases=${2:-1000}
bin=${LECTOR_BIN:-$root/.build/debug/lector}
venv=$root/.venv-fuzz
port=${LECTOR_FUZZ_PORT:-18181}
pg_port=${LECTOR_PG_PORT:-54329}

if [[ ! -x $venv/bin/schemathesis ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check schemathesis==4.32.5
fi

deploy/scripts/pg.sh start >/dev/null
deploy/scripts/pg.sh psql -d postgres -c "DROP DATABASE IF EXISTS lector_fuzz WITH (FORCE)" >/dev/null
deploy/scripts/pg.sh psql -d postgres -c "CREATE DATABASE lector_fuzz" >/dev/null
storage=$(mktemp -d /tmp/lector-fuzz.XXXXXX)
export LECTOR_DATABASE_URL="postgres://lector@127.0.0.1:$pg_port/lector_fuzz" LECTOR_STORAGE_ROOT=$storage \
  LECTOR_HTTP_PORT=$port LECTOR_RATE_LIMIT=1000000 LECTOR_RATE_BURST=1000000 LECTOR_LONG_POLL_MAX=1 \
  LECTOR_LOG_LEVEL=error OMP_THREAD_LIMIT=1
"$bin" migrate --directory "$root/db" >/dev/null
key=$("$bin" keys create --user fuzz 2>/dev/null)

"$bin" serve 2>"$storage/api.log" &
api=$!
# A worker with the no-op engine, so that submitted jobs finish and results, links and files get fuzzed too.
LECTOR_ENGINE=noop LECTOR_WORKER_POLL_INTERVAL=0.2 "$bin" work 2>"$storage/worker.log" &
worker=$!
cleanup() {
  kill -TERM "$api" "$worker" 2>/dev/null || true
  wait "$api" "$worker" 2>/dev/null || true
  rm -rf "$storage"
  deploy/scripts/pg.sh psql -d postgres -c "DROP DATABASE IF EXISTS lector_fuzz WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

fuzz() {
  "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --max-examples "$examples" --seed 20261122 --workers 2 --request-timeout 10 --no-color \
    --exclude-path /v1/events \
    --report ndjson --report-dir "$storage/report" | tee "$storage/fuzz.out"
  return "${PIPESTATUS[0]}"
}
set +e
fuzz
status=$?
# Python 3.11's ast module can fail inside Hypothesis while it describes a lambda ("SystemError: AST constructor
# recursion depth mismatch", a bug of the interpreter in Debian 12): a crash of the fuzzer, not a
# finding about the API, and it depends on how deep the generator's stack happens to be. Run again once.
if [[ $status -ne 0 ]] && grep -q "AST constructor recursion depth mismatch" "$storage/fuzz.out" \
   && ! grep -qE "^(Failures|  ❌)" "$storage/fuzz.out"; then
  echo "fuzz: schemathesis crashed in Python's ast module (a known CPython 3.11 bug); running it once more" >&2
  fuzz
  status=$?
fi
set -e
cases=$(grep -oE '[0-9]+ generated' "$storage/fuzz.out" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
if [[ $cases -lt $min_cases ]]; then
  echo "fuzz: only $cases test cases ran (at least $min_cases expected)" >&2
  status=1
fi
if ! kill -0 "$api" 2>/dev/null; then
  echo "fuzz: the API process died during the run" >&2
  status=1
fi
if grep -q "unhandled error" "$storage/api.log" 2>/dev/null; then
  echo "fuzz: the API logged an unhandled error:" >&2
  grep "unhandled error" "$storage/api.log" | head -5 >&2
  status=1
fi
echo "fuzz: schemathesis exit status $status, $cases test cases"
exit "$status"
