#!/usr/bin/env bash
# `make cluster`: proof that Lector needs no shared filesystem with LECTOR_STORAGE=s3://… (issue 12).
#
# Four network namespaces play four hosts, joined by veth links to one bridge (lcl-br, 10.77.12.1/24 in the
# root namespace, which plays the outside client):
#
#   lcl-store  10.77.12.2   a PostgreSQL of its own (deploy/scripts/pg.sh: own data folder, port 5432) and
#                           SeaweedFS `weed mini` (deploy/scripts/weed.sh, S3 on port 18003), both bound to it
#   lcl-api    10.77.12.10  lector serve (port 8080)
#   lcl-w1     10.77.12.11  lector work, 2 slots
#   lcl-w2     10.77.12.12  lector work, 2 slots: torn down mid-run (processes SIGKILLed, namespace deleted)
#
# No namespace has a default route: a Lector process reaches only 10.77.12.0/24 and its own loopback (not the
# project's PostgreSQL on the root namespace's 127.0.0.1:54329, nor anything outside). Each Lector process
# starts from an empty environment (env -i) with its own empty working directory, HOME, TMPDIR (so its spool)
# and a LECTOR_STORAGE_ROOT that must never appear. Tests/cluster/cluster.py then submits CLUSTER_JOBS (200)
# rendered documents from the root namespace to the API's address, tears down lcl-w2 once a quarter of them
# have ended and w2 holds jobs, waits for all, and checks: every job FINISHED exactly once with its own text
# (read through the API's 302 to the store), the jobs w2 held rescued by w1, every job's objects in the store
# and no staged attempt left, and no file but logs on any process's local disk. Everything (processes,
# namespaces, veths, the bridge) is removed on exit, failure or Ctrl-C included; the run folder is deleted on
# success and kept (logs only) on failure.
#
#   deploy/scripts/cluster.sh                     (make cluster; root; LECTOR_BIN, WEED, CLUSTER_JOBS, CLUSTER_TIMEOUT
#                                                  (300 s), CLUSTER_KEEPALIVES=0: the store's PostgreSQL without them)
#   deploy/scripts/cluster.sh teardown-host w2    (used by cluster.py: kill that host's processes, delete it)
#   deploy/scripts/cluster.sh freeze-host w2      (used by cluster.py: SIGSTOP them, to read their leases; thaw-host)
#   deploy/scripts/cluster.sh clean               (remove what a killed run left: lcl-* namespaces, lcl-br)
#   deploy/scripts/cluster.sh check               (exit 0 when this machine can run it: root and ip netns)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
lector=${LECTOR_BIN:-$root/.build/debug/lector}
jobs=${CLUSTER_JOBS:-200}
net=10.77.12
bridge=lcl-br
declare -A address=([store]=2 [api]=10 [w1]=11 [w2]=12)
hosts=(store api w1 w2)

say() { echo "cluster: $*" >&2; }

# SIGTERM, then SIGKILL, every process inside namespace lcl-$1 (all of them were started by this script).
kill_in() {
  local ns=lcl-$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [[ -n $pids ]] || return 0
  kill -"${2:-TERM}" $pids 2>/dev/null || true
  for _ in $(seq 1 100); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
  sleep 0.2
}

remove_host() {
  local h=$1
  ip netns list | grep -qw "lcl-$h" || return 0
  kill_in "$h" "${2:-TERM}"
  ip netns del "lcl-$h" 2>/dev/null || true
  ip link del "lcl-$h-v" 2>/dev/null || true   # gone with its peer already; in case
}

clean_all() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep '^lcl-' || true); do remove_host "${ns#lcl-}"; done
  ip link del "$bridge" 2>/dev/null || true
}

case "${1:-}" in
  teardown-host)
    h=${2:?host}
    [[ -n ${address[$h]:-} ]] || { echo "cluster.sh: no host $h" >&2; exit 2; }
    remove_host "$h" KILL
    say "host $h torn down (processes killed, namespace lcl-$h deleted)"
    exit 0
    ;;
  freeze-host|thaw-host)   # SIGSTOP / SIGCONT that host's processes (cluster.py reads its leases while frozen)
    h=${2:?host}
    [[ -n ${address[$h]:-} ]] || { echo "cluster.sh: no host $h" >&2; exit 2; }
    pids=$(ip netns pids "lcl-$h")
    if [[ -n $pids ]]; then kill "-$([[ $1 == freeze-host ]] && echo STOP || echo CONT)" $pids; fi
    exit 0
    ;;
  clean)
    clean_all
    exit 0
    ;;
  check)   # exit 0 when this machine can run it (root, ip netns)
    [[ $(id -u) -eq 0 ]] && command -v ip >/dev/null || exit 1
    probe=lcl-probe-$$
    ip netns add "$probe" 2>/dev/null || exit 1
    ip netns del "$probe"
    exit 0
    ;;
  "") ;;
  *) echo "usage: cluster.sh [teardown-host|freeze-host|thaw-host NAME|clean|check]" >&2; exit 2 ;;
esac

[[ $(id -u) -eq 0 ]] || { echo "cluster.sh: needs root (ip netns)" >&2; exit 1; }
[[ -x $lector ]] || { echo "cluster.sh: $lector is missing: make build (or set LECTOR_BIN)" >&2; exit 1; }
command -v ip >/dev/null || { echo "cluster.sh: ip (iproute2) is missing" >&2; exit 1; }

exec 9>/run/lock/lector-cluster.lock
# One run at a time on a machine (the names and the subnet are fixed): a second one waits for the first.
if ! flock -n 9; then
  say "another run holds /run/lock/lector-cluster.lock: waiting for it"
  flock -w 900 9 || { echo "cluster.sh: /run/lock/lector-cluster.lock still held after 15 min" >&2; exit 1; }
fi
clean_all   # what a run killed before its trap could run left behind

run=$(mktemp -d /tmp/lector-cluster.XXXXXX)
chmod 711 "$run"   # lector-pg (PostgreSQL's owner) must reach $run/pg
ok=0
driver=
started=$(date +%s)

nsx() { local h=$1; shift; ip netns exec "lcl-$h" "$@"; }
store_env=(LECTOR_PG_DIR="$run/pg" LECTOR_PG_HOST="$net.2" LECTOR_PG_PORT=5432 LECTOR_PG_ALLOW="$net.0/24"
           LECTOR_WEED_DIR="$run/weed" LECTOR_WEED_HOST="$net.2" LECTOR_WEED_BASE=18000
           LECTOR_TEST_S3_BUCKET=lector-cluster)
if [[ -n ${WEED:-} ]]; then store_env+=(WEED="$WEED"); fi

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  say "cleaning up"
  if [[ -n ${driver:-} ]]; then kill "$driver" 2>/dev/null; wait "$driver" 2>/dev/null; fi
  for h in api w1 w2; do kill_in "$h"; done
  if ip netns list | grep -qw lcl-store; then
    nsx store env "${store_env[@]}" "$root/deploy/scripts/weed.sh" stop
    nsx store env "${store_env[@]}" "$root/deploy/scripts/pg.sh" stop
  fi
  clean_all
  left=$( (ip netns list | grep '^lcl-'; ip -o link show | grep -E ' lcl-') || true)
  if [[ -n $left ]]; then say "LEFT BEHIND: $left"; rc=1; fi
  if [[ $ok == 1 && $rc == 0 ]]; then
    rm -rf "$run"
    say "PASS in $(( $(date +%s) - started )) s; namespaces, links and processes removed"
  else
    rm -rf "$run/pg/data" "$run/weed/data" "$run/docs"
    say "FAILED (exit $rc); namespaces, links and processes removed; logs kept in $run"
    [[ $rc == 0 ]] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the virtual network
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
for h in "${hosts[@]}"; do
  ip netns add "lcl-$h"
  ip link add "lcl-$h-v" type veth peer name eth0 netns "lcl-$h"
  ip link set "lcl-$h-v" master "$bridge" up
  nsx "$h" ip link set lo up
  nsx "$h" ip addr add "$net.${address[$h]}/24" dev eth0
  nsx "$h" ip link set eth0 up
done
for h in "${hosts[@]}"; do
  [[ -z $(ip -n "lcl-$h" route show default) ]] || { say "lcl-$h has a default route"; exit 1; }
done
# The Lector hosts cannot reach the root namespace's loopback (the project's PostgreSQL on 127.0.0.1:54329).
if ip netns exec lcl-w1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/54329' 2>/dev/null; then
  say "lcl-w1 reaches 127.0.0.1:54329: the namespace is not isolated"; exit 1
fi
say "namespaces up: $(for h in "${hosts[@]}"; do printf 'lcl-%s=%s.%s ' "$h" "$net" "${address[$h]}"; done)"

# --- the store host: PostgreSQL and SeaweedFS, bound to 10.77.12.2 only
nsx store env "${store_env[@]}" "$root/deploy/scripts/pg.sh" start >/dev/null
nsx store env "${store_env[@]}" "$root/deploy/scripts/pg.sh" createdb lector
# A host that vanishes mid-transaction sends no FIN: its backend would keep the transaction, and the locks of a
# job it was ending (the rescuer skips locked leases), until TCP gives up (hours). Keepalives end it in ~11 s.
# (Seen here: one run in ten left a job IN_PROGRESS for 300 s without them; docs/object-storage.md.)
# CLUSTER_KEEPALIVES=0 leaves them out (to see the failure).
if [[ ${CLUSTER_KEEPALIVES:-1} != 0 ]]; then
  nsx store env "${store_env[@]}" "$root/deploy/scripts/pg.sh" psql -d postgres -c "ALTER SYSTEM SET tcp_keepalives_idle = 5" \
    -c "ALTER SYSTEM SET tcp_keepalives_interval = 2" -c "ALTER SYSTEM SET tcp_keepalives_count = 3" -c "SELECT pg_reload_conf()" >/dev/null
fi
nsx store env "${store_env[@]}" "$root/deploy/scripts/weed.sh" start >/dev/null
eval "$(env "${store_env[@]}" "$root/deploy/scripts/weed.sh" env)"
# weed.sh's anonymous probe can pass before `weed mini` has created the bucket: wait for a signed listing.
for _ in $(seq 1 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:$LECTOR_S3_REGION:s3" \
         --user "$LECTOR_S3_ACCESS_KEY_ID:$LECTOR_S3_SECRET_ACCESS_KEY" "$LECTOR_S3_ENDPOINT/lector-cluster?list-type=2&max-keys=1" || true)
  [[ $code == 200 ]] && break
  sleep 0.2
done
[[ $code == 200 ]] || { say "the bucket lector-cluster is not there (HTTP $code)"; exit 1; }
listeners=$(nsx store ss -Hltn | awk '{print $4}' | sort -u | tr '\n' ' ')
say "store host listens on: $listeners"
for l in $listeners; do   # weed mini also listens on the namespace's own loopback for some services
  [[ $l == "$net.2:"* || $l == 127.0.0.1:* ]] || { say "a listener on $l, not on $net.2 or loopback"; exit 1; }
done

# --- the Lector hosts: each process from an empty environment, its own empty folders
common=(PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 OMP_THREAD_LIMIT=1 MALLOC_ARENA_MAX=2
        LECTOR_DATABASE_URL="postgres://lector@$net.2:5432/lector"
        LECTOR_STORAGE=s3://lector-cluster/jobs LECTOR_S3_ENDPOINT="$LECTOR_S3_ENDPOINT"
        LECTOR_S3_REGION="$LECTOR_S3_REGION" LECTOR_S3_ACCESS_KEY_ID="$LECTOR_S3_ACCESS_KEY_ID"
        LECTOR_S3_SECRET_ACCESS_KEY="$LECTOR_S3_SECRET_ACCESS_KEY" LECTOR_S3_ADDRESSING=path
        LECTOR_DB_MODEL="$root/deploy/models/ppocr-v4-det/ch_PP-OCRv4_det_infer.opencv46.onnx"
        LECTOR_LOG_LEVEL=notice LECTOR_RATE_LIMIT=1000 LECTOR_RATE_BURST=1000
        LECTOR_LEASE_SECONDS=6 LECTOR_HEARTBEAT_SECONDS=1.5 LECTOR_RESCUE_INTERVAL=1
        LECTOR_WORKER_POLL_INTERVAL=0.5 LECTOR_MAX_ATTEMPTS=5 LECTOR_SHUTDOWN_GRACE=5 LECTOR_WORKER_CONCURRENCY=2)
lector_in() {   # lector_in HOST ARGS...: lector in the host's namespace, environment and folders
  local h=$1 d=$run/hosts/$1; shift
  mkdir -p "$d/cwd" "$d/home" "$d/tmp" "$d/logs"
  (cd "$d/cwd" && exec ip netns exec "lcl-$h" env -i "${common[@]}" HOME="$d/home" TMPDIR="$d/tmp" \
     LECTOR_STORAGE_ROOT="$d/storage" LECTOR_WORKER_ID="$h" LECTOR_HTTP_HOST="$net.${address[$h]}" \
     LECTOR_HTTP_PORT=8080 "$lector" "$@")
}
lector_on() { local h=$1 name=$2; shift 2; mkdir -p "$run/hosts/$h/logs"; lector_in "$h" "$@" >>"$run/hosts/$h/logs/$name.log" 2>&1 < /dev/null; }
mkdir -p "$run/hosts/api/logs"   # for keys.log
lector_on api migrate migrate --directory "$root/db"
key=$(lector_in api keys create --user cluster 2>>"$run/hosts/api/logs/keys.log")
lector_on api api serve &
lector_on w1 worker work &
lector_on w2 worker work &
for _ in $(seq 1 300); do
  curl -sf "http://$net.10:8080/healthz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://$net.10:8080/readyz" >/dev/null || { say "the API at $net.10:8080 is not ready"; exit 1; }
say "API ready at http://$net.10:8080 (store $LECTOR_S3_ENDPOINT, PostgreSQL $net.2:5432)"

# In the background, so that INT/TERM reach the trap at once (the trap stops the driver); the key through the
# environment, not the command line.
LECTOR_CLUSTER_KEY=$key python3 "$root/Tests/cluster/cluster.py" --api "http://$net.10:8080" --jobs "$jobs" \
  --timeout "${CLUSTER_TIMEOUT:-300}" \
  --database "postgres://lector@$net.2:5432/lector" --hosts "$run/hosts" --documents "$run/docs" --kill w2 \
  --teardown "$root/deploy/scripts/cluster.sh teardown-host w2" \
  --freeze "$root/deploy/scripts/cluster.sh freeze-host w2" --thaw "$root/deploy/scripts/cluster.sh thaw-host w2" &
driver=$!
wait "$driver"
driver=
ok=1
