#!/usr/bin/env bash
# mkdb.sh NAME [old]: (re)create scratch database NAME with db/001..005 and, unless "old", db/006.
set -euo pipefail
name=${1:?name}; mode=${2:-new}
[[ $name == fair_* ]] || { echo "scratch databases are named fair_*" >&2; exit 2; }
PSQL=(/usr/bin/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 54329 -U lector)
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$name\"" -c "CREATE DATABASE \"$name\""
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
files=("$root"/db/00{1,2,3,4,5}_*.sql)
[[ $mode == old ]] || files+=("$root"/db/006_fair_claim.sql)
for f in "${files[@]}"; do "${PSQL[@]}" -d "$name" -f "$f" >/dev/null; done
