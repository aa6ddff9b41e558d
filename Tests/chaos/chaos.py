#!/usr/bin/env python3
"""Chaos run: no job may be lost, whatever happens to workers or the database.

Starts the API and N worker processes against the project's private PostgreSQL cluster (its own database and
storage root), submits JOBS small documents through HTTP, kills a random worker with SIGKILL every
KILL_INTERVAL seconds and restarts it, restarts PostgreSQL once mid-run, then waits for every job to end and
checks, for every id the server acknowledged: FINISHED, exactly one FINISHED transition, a result.txt that
holds its document's own number, and a result.json written by the attempt that finished the job (a stale
attempt's files never overwrite). extra_jobs counts jobs created by a submit retried after a lost answer
(idempotency keys are another issue's). Prints one summary line and exits non-zero on any loss.

    Tests/chaos/chaos.py --jobs 1000          (make chaos)
    Tests/chaos/chaos.py --jobs 150           (part of make test)
    Tests/chaos/chaos.py --storage s3         (make chaos-s3: LECTOR_STORAGE=s3://… on the private SeaweedFS of
                                               deploy/scripts/weed.sh, which is restarted once instead of PostgreSQL;
                                               results are read from the store)

Standard library only. Documents are rendered here with ImageMagick; nothing is read from elsewhere.
"""
import argparse
import concurrent.futures
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")
WEED = os.path.join(ROOT, "deploy", "scripts", "weed.sh")
sys.path.insert(0, os.path.join(ROOT, "Tests", "storage"))


def log(message):
    print(f"chaos: {message}", file=sys.stderr, flush=True)


def psql(database, sql):
    out = subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def render(directory, index):
    path = os.path.join(directory, f"doc-{index:04d}.png")
    subprocess.run(
        ["/usr/bin/convert", "-size", "560x110", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "40",
         "-fill", "black", "-annotate", "+20+70", f"Document {index:04d}", "-depth", "8", path],
        check=True)
    return path


class Lector:
    """The API and worker processes of the run."""

    def __init__(self, binary, env, workers):
        self.binary, self.env, self.count = binary, env, workers
        self.api = None
        self.workers = [None] * workers
        self.lock = threading.Lock()
        self.kills = 0

    def start_api(self):
        self.api = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(self.env["LECTOR_STORAGE_ROOT"], "api.log"), "ab"))

    def start_worker(self, slot):
        env = dict(self.env, LECTOR_WORKER_ID=f"chaos-{slot}-{int(time.time() * 1000) % 100000}")
        self.workers[slot] = subprocess.Popen(
            [self.binary, "work"], env=env, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.env["LECTOR_STORAGE_ROOT"], f"worker-{slot}.log"), "ab"))

    def kill_random_worker(self):
        with self.lock:
            slot = random.randrange(self.count)
            self.workers[slot].send_signal(signal.SIGKILL)
            self.workers[slot].wait()
            self.kills += 1
            self.start_worker(slot)

    def stop(self):
        for process in [self.api, *self.workers]:
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.api, *self.workers]:
            if process:
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()


def request(method, url, key, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.status, response.read()


def submit(base, key, path):
    """Submits until the server acknowledges (202); the database may be restarting meanwhile."""
    with open(path, "rb") as f:
        data = f.read()
    delay = 0.2
    while True:
        try:
            status, body = request("POST", f"{base}/v1/jobs", key, data, "image/png")
            if status == 202:
                return json.loads(body)["id"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(delay)
        delay = min(delay * 2, 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-interval", type=float, default=2.0)
    parser.add_argument("--port", type=int, default=int(os.environ.get("LECTOR_CHAOS_PORT", "18080")))
    parser.add_argument("--timeout", type=float, default=1500)
    parser.add_argument("--binary", default=os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector")))
    parser.add_argument("--storage", choices=["files", "s3"], default="files")
    parser.add_argument("--restart", choices=["postgres", "store"], default=None,
                        help="what is restarted once mid-run (default: postgres with files, the store with s3)")
    args = parser.parse_args()
    restart = args.restart or ("store" if args.storage == "s3" else "postgres")
    if restart == "store" and args.storage != "s3":
        parser.error("--restart store needs --storage s3")
    store = None

    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    database = "lector_chaos" if args.storage == "files" else "lector_chaos_s3"
    if subprocess.run([PG, "psql", "-d", "postgres", "-tAc", "SELECT 1"], capture_output=True).returncode != 0:
        subprocess.run([PG, "start"], check=True, capture_output=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {database}")
    storage = tempfile.mkdtemp(prefix="lector-chaos-")
    env = dict(os.environ,
               LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{database}",
               LECTOR_STORAGE_ROOT=storage, LECTOR_HTTP_PORT=str(args.port), LECTOR_LOG_LEVEL="warning",
               LECTOR_LEASE_SECONDS="4", LECTOR_HEARTBEAT_SECONDS="1", LECTOR_RESCUE_INTERVAL="1",
               LECTOR_WORKER_POLL_INTERVAL="0.5", LECTOR_MAX_ATTEMPTS="25", LECTOR_RETRY_BASE_SECONDS="0.2",
               LECTOR_RETRY_MAX_SECONDS="2", LECTOR_SHUTDOWN_GRACE="5", OMP_THREAD_LIMIT="1")
    if args.storage == "s3":
        from s3_e2e import Store, store_env
        subprocess.run([WEED, "start"], check=True, capture_output=True)
        store = Store(store_env())
        prefix = f"chaos-{os.urandom(6).hex()}"
        # Short store deadlines, so that requests during the store's restart fail fast and are retried.
        env.update(LECTOR_STORAGE=f"s3://{store.bucket}/{prefix}", LECTOR_S3_ENDPOINT=store.endpoint,
                   LECTOR_S3_REGION=store.region, LECTOR_S3_ACCESS_KEY_ID=store.access,
                   LECTOR_S3_SECRET_ACCESS_KEY=store.secret, LECTOR_S3_TIMEOUT="5", LECTOR_S3_MAX_ATTEMPTS="3",
                   LECTOR_SPOOL_DIR=os.path.join(storage, "spool"), LECTOR_SIGNING_KEY="chaos-signing-key-0123456789")
    subprocess.run([args.binary, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True,
                   capture_output=True)
    key = subprocess.run([args.binary, "keys", "create", "--user", "chaos"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()

    documents = os.path.join(storage, "documents")
    os.makedirs(documents)
    log(f"rendering {args.jobs} documents")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(lambda i: render(documents, i), range(args.jobs)))

    lector = Lector(args.binary, env, args.workers)
    lector.start_api()
    for slot in range(args.workers):
        lector.start_worker(slot)
    base = f"http://127.0.0.1:{args.port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            break
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)

    started = time.time()
    done = threading.Event()
    pg_restarted = threading.Event()

    def chaos():
        next_kill = time.time() + args.kill_interval
        while not done.is_set():
            time.sleep(0.1)
            if time.time() >= next_kill:
                lector.kill_random_worker()
                next_kill = time.time() + args.kill_interval

    def restart_postgres():
        # Once, after the first third of the jobs have ended (or 20 s at most): PostgreSQL, or the object store.
        while not done.is_set():
            ended = int(psql(database, "SELECT count(*) FROM jobs WHERE status IN ('FINISHED', 'FAILURE')") or 0)
            if ended >= args.jobs // 3 or time.time() - started > 20:
                break
            time.sleep(0.5)
        if done.is_set():
            return
        if restart == "store":
            log("restarting the object store")
            subprocess.run([WEED, "stop"], check=True)
            time.sleep(2)
            subprocess.run([WEED, "start"], check=True, capture_output=True)
            pg_restarted.set()
            log("the object store is back")
            return
        log("restarting PostgreSQL")
        subprocess.run([PG, "stop"], check=True)
        time.sleep(2)
        subprocess.run([PG, "start"], check=True, capture_output=True)
        pg_restarted.set()
        log("PostgreSQL is back")

    killer = threading.Thread(target=chaos, daemon=True)
    restarter = threading.Thread(target=restart_postgres, daemon=True)
    killer.start()
    restarter.start()

    log(f"submitting {args.jobs} jobs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda path: submit(base, key, path), paths))
    token_of = {job: f"{index:04d}" for index, job in enumerate(ids)}

    deadline = started + args.timeout
    remaining = args.jobs
    while time.time() < deadline:
        try:
            remaining = int(psql(database, "SELECT count(*) FROM jobs WHERE status IS DISTINCT FROM 'FINISHED' AND status IS DISTINCT FROM 'FAILURE'"))
        except subprocess.CalledProcessError:
            remaining = -1
        if remaining == 0 and pg_restarted.is_set():
            break
        time.sleep(1)
    done.set()
    killer.join()
    restarter.join()
    seconds = time.time() - started
    lector.stop()

    # Every check is made on the ids the server acknowledged, not on table counts.
    status_of = dict(line.split("|") for line in psql(database, "SELECT id, coalesce(status, '-') FROM jobs").splitlines())
    attempts_of = dict(line.split("|") for line in psql(database, "SELECT id, attempts FROM jobs").splitlines())
    finished = sum(1 for job in ids if status_of.get(job) == "FINISHED")
    extra = len(status_of) - len(set(ids))
    double = int(psql(database, "SELECT count(*) FROM (SELECT job_id FROM job_transitions WHERE status = 'FINISHED' GROUP BY job_id HAVING count(*) > 1) d"))
    rescued = int(psql(database, "SELECT count(*) FROM job_transitions WHERE status = 'QUEUED' AND reason LIKE 'worker lost%'"))
    retried = int(psql(database, "SELECT count(*) FROM job_transitions WHERE status = 'QUEUED' AND reason LIKE 'retrying%'"))
    failures = psql(database, "SELECT string_agg(DISTINCT reason, ' | ') FROM job_transitions WHERE status = 'FAILURE'")
    mismatched = 0   # result text without the document's own number
    stale = 0        # result files written by an attempt other than the one that finished the job
    def read_result(job, name):
        if store:
            return store.request("GET", f"{prefix}/{job}/{name}")[1].decode("utf-8")
        with open(os.path.join(storage, job, name), encoding="utf-8") as f:
            return f.read()

    for job, token in token_of.items():
        try:
            if token not in read_result(job, "result.txt"):
                mismatched += 1
            if str(json.loads(read_result(job, "result.json")).get("attempt")) != attempts_of.get(job):
                stale += 1
        except (OSError, ValueError):
            mismatched += 1
    if store:
        # Staged objects of killed attempts, and of discards that failed while the store restarted, stay until the
        # sweeper's age: counted, not an error.
        leftovers = sum(1 for k in store.keys(prefix + "/") if "/attempts/" in k)
        log(f"staged objects left for the sweeper (killed attempts, discards during the restart): {leftovers}")
        store.delete_prefix(prefix + "/")
    lost = len(ids) - finished
    print(f"chaos: jobs={args.jobs} finished={finished} lost={lost} double_finished={double} rescued={rescued} "
          f"retried={retried} mismatched={mismatched} stale_results={stale} extra_jobs={extra} kills={lector.kills} "
          f"{'store_restarts' if restart == 'store' else 'pg_restarts'}={int(pg_restarted.is_set())} "
          f"storage={args.storage} seconds={seconds:.0f}", flush=True)
    ok = (lost == 0 and double == 0 and mismatched == 0 and stale == 0 and len(set(ids)) == args.jobs
          and pg_restarted.is_set())
    if not ok:
        log(f"FAILED (failure reasons: {failures or '-'}); logs in {storage}")
        return 1
    shutil.rmtree(storage, ignore_errors=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
