#!/usr/bin/env bash
# Runs the Swift tests one at a time (60-100 s here). A run that has not ended after LECTOR_SWIFT_TEST_LIMIT
# seconds (default 480) has hung: it is killed, the tests it had started and not ended are named, and the run is
# made once more; a second hang fails. (A hang, rare and not understood, is in docs/design/decisions.md, known
# gaps: every test in flight waiting, no database activity, every thread idle.)
#
#   deploy/scripts/swift-tests.sh [swift test arguments]
set -uo pipefail
limit=${LECTOR_SWIFT_TEST_LIMIT:-480}
for try in 1 2; do
  log=$(mktemp /tmp/lector-swift-tests.XXXXXX)
  # timeout signals its whole process group, so the test process goes with swift-test.
  timeout --signal=KILL "$limit" swift test --skip-build --no-parallel "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  if [[ $status -ne 137 && $status -ne 124 ]]; then
    rm -f "$log"
    exit "$status"
  fi
  echo "swift-tests: no end after ${limit} s (try $try of 2); started and not ended:" >&2
  python3 - "$log" >&2 <<'PY'
import re, sys
started, ended = [], set()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    if m := re.match(r'^\S+ Test (.+?) started\.$', line.strip()):
        started.append(m.group(1))
    elif m := re.match(r'^\S+ Test (.+?) (passed|failed|skipped)', line.strip()):
        ended.add(m.group(1))
for name in started:
    if name not in ended:
        print(f"  {name}")
PY
  rm -f "$log"
done
exit 1
