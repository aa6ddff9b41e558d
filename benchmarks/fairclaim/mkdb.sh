#!/usr/bin/env bash
# mkdb.sh NAME [old|new|THROUGH]: (re)create scratch database NAME with the migrations db/001.. up to and
# including number THROUGH (old: 5, the claim before the fair claim; new, the default: 6).
set -euo pipefail
name=${1:?name}; mode=${2:-new}
[[ $name == fair_* ]] || { echo "scratch databases are named fair_*" >&2; exit 2; }
case $mode in old) through=5 ;; new) through=6 ;; *) through=$mode ;; esac
PSQL=(/usr/bin/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 54329 -U lector)
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$name\"" -c "CREATE DATABASE \"$name\""
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
for f in "$root"/db/[0-9][0-9][0-9]_*.sql; do
  number=$(basename "$f"); number=$((10#${number%%_*}))
  (( number <= through )) && "${PSQL[@]}" -d "$name" -f "$f" >/dev/null
done
exit 0
