#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests, in the project's git-ignored .pgdata/.
#
#   pg.sh start       start it (initdb on first use); prints "started" or "running"
#   pg.sh stop        stop it
#   pg.sh status      exit 0 when it runs
#   pg.sh createdb N  create database N when missing
#   pg.sh psql ...    psql as the cluster's superuser
#
# It listens on 127.0.0.1:$LECTOR_PG_PORT (default 54329) and on a socket in .pgdata/run. PostgreSQL refuses
# to run as root, so as root the cluster belongs to the system user lector-pg, created when needed.
#
# For a second, separate cluster (deploy/scripts/cluster.sh runs one inside a network namespace):
#   LECTOR_PG_DIR    its folder instead of .pgdata (the data, the socket and the log go there)
#   LECTOR_PG_HOST   the address it listens on instead of 127.0.0.1 (written at initdb; psql connects there)
#   LECTOR_PG_ALLOW  a CIDR (e.g. 10.77.12.0/24) whose clients are trusted too (pg_hba.conf, at initdb)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
port=${LECTOR_PG_PORT:-54329}
host=${LECTOR_PG_HOST:-127.0.0.1}
base=${LECTOR_PG_DIR:-$root/.pgdata}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[[ -x "$bindir/pg_ctl" ]] || { echo "pg.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_owner=()
if [[ $(id -u) -eq 0 ]]; then
  if ! id lector-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin lector-pg
  fi
  as_owner=(runuser -u lector-pg --)
fi

prepare() {
  if [[ ! -e "$base" ]]; then
    if [[ ${#as_owner[@]} -gt 0 ]] && ! runuser -u lector-pg -- test -x "$(dirname "$base")"; then
      # The checkout (or LECTOR_PG_DIR's parent) is not reachable by lector-pg (e.g. under /root): keep the data elsewhere, linked here.
      target=$(mktemp -d /var/tmp/lector-pgdata.XXXXXX)
      ln -s "$target" "$base"
    else
      mkdir -p "$base"
    fi
  fi
  mkdir -p "$base/run"
  if [[ ${#as_owner[@]} -gt 0 ]]; then chown -R lector-pg: "$(readlink -f "$base")"; fi
  chmod 700 "$(readlink -f "$base")"
}

data="$base/data"
run="$base/run"
log="$base/postgres.log"

running() { [[ -f "$data/postmaster.pid" ]] && "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

psql_() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U lector "$@"; }

case "${1:-}" in
  start)
    prepare
    if [[ ! -f "$data/PG_VERSION" ]]; then
      "${as_owner[@]}" "$bindir/initdb" -D "$data" -U lector --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
      cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '$host'
port = $port
unix_socket_directories = '$run'
max_connections = 300
shared_buffers = 128MB
log_min_messages = warning
# A client host that vanished (a worker's machine or namespace gone, no FIN) would otherwise keep its session,
# and the locks of a transaction in flight, until the kernel's two-hour keepalive: found after ~40 s instead.
tcp_keepalives_idle = 20
tcp_keepalives_interval = 5
tcp_keepalives_count = 4
CONF
      if [[ -n ${LECTOR_PG_ALLOW:-} ]]; then
        echo "host all all $LECTOR_PG_ALLOW trust" >>"$data/pg_hba.conf"
      fi
    fi
    if running; then echo running; exit 0; fi
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "-p $port -k '$run'" start >/dev/null \
      || { echo "pg.sh: PostgreSQL did not start; see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
    echo started
    ;;
  stop)
    if running; then "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
    ;;
  status)
    running
    ;;
  createdb)
    name=${2:?database name}
    exists=$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")
    [[ "$exists" == 1 ]] || psql_ -d postgres -c "CREATE DATABASE \"$name\""
    ;;
  psql)
    shift
    psql_ "$@"
    ;;
  *)
    echo "usage: pg.sh start|stop|status|createdb NAME|psql ARGS" >&2
    exit 2
    ;;
esac
