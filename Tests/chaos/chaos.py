#!/usr/bin/env python3
"""Chaos run: no job may be lost, whatever happens to workers or the database.

Starts the API and N worker processes against the project's private PostgreSQL cluster (its own database and
storage root), submits JOBS small documents through HTTP, kills a random worker with SIGKILL every
KILL_INTERVAL seconds and restarts it, restarts PostgreSQL twice (during the submits, and mid-run), then waits for every job to end and
checks, for every id the server acknowledged: FINISHED, exactly one FINISHED transition, a result.txt that
holds its document's own number, and a result.json written by the attempt that finished the job (a stale
attempt's files never overwrite). A fifth of the documents go in batches of five; every tenth is a three-page TIFF, read as page tasks (--multipage). Meanwhile it cancels, deletes and re-OCRs a fifth as many jobs as it submits
(--mix): a cancelled job ends FAILURE "cancelled" (or FINISHED, when the cancel of a running job lost the race
with its end), a deleted one leaves no folder, a re-OCR finishes with its first job's text. A crash in any
process's log fails the run. extra_jobs counts jobs created by a submit retried after a lost answer
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


def render(directory, index, pages=1):
    """A PNG holding "Document NNNN"; with pages > 1, a TIFF of that many such pages (split into page tasks)."""
    path = os.path.join(directory, f"doc-{index:04d}.png")
    subprocess.run(
        ["/usr/bin/convert", "-size", "560x110", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "40",
         "-fill", "black", "-annotate", "+20+70", f"Document {index:04d}", "-depth", "8", path],
        check=True)
    if pages == 1:
        return path
    tiff = os.path.join(directory, f"doc-{index:04d}.tiff")
    subprocess.run(["/usr/bin/convert", *([path] * pages), "-depth", "8", tiff], check=True)
    return tiff


def content_type(path):
    return "image/tiff" if path.endswith(".tiff") else "image/png"


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
            status, body = request("POST", f"{base}/v1/jobs", key, data, content_type(path))
            if status == 202:
                return json.loads(body)["id"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(delay)
        delay = min(delay * 2, 3)


def submit_batch(base, key, paths):
    """Submits `paths` as one batch (POST /v1/batches) until the server acknowledges; returns the job ids in order.
    A batch is all or nothing: a 202 means every job of it is committed."""
    boundary = f"chaos-{os.urandom(8).hex()}"
    body = b""
    for path in paths:
        with open(path, "rb") as f:
            body += (f'--{boundary}\r\nContent-Disposition: form-data; name="document"; filename="{os.path.basename(path)}"\r\n'
                     f"Content-Type: {content_type(path)}\r\n\r\n").encode() + f.read() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    delay = 0.2
    while True:
        try:
            status, answer = request("POST", f"{base}/v1/batches", key, body, f"multipart/form-data; boundary={boundary}")
            if status == 202:
                return [job["id"] for job in json.loads(answer)["jobs"]]
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
    parser.add_argument("--mix", type=int, default=None,
                        help="cancels, deletes and re-OCRs to mix into the run (default: a fifth of --jobs)")
    parser.add_argument("--binary", default=os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector")))
    parser.add_argument("--multipage", type=int, default=10,
                        help="every Nth document is a 3-page TIFF, read as page tasks (0: none)")
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
        paths = list(pool.map(lambda i: render(documents, i, 3 if args.multipage and i % args.multipage == 0 else 1), range(args.jobs)))

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
    pg_restarts = []

    def chaos():
        next_kill = time.time() + args.kill_interval
        while not done.is_set():
            time.sleep(0.1)
            if time.time() >= next_kill:
                lector.kill_random_worker()
                next_kill = time.time() + args.kill_interval

    acknowledged = []  # one entry per 202, appended by the submitting threads

    def restart_postgres():
        # Twice: while submits are arriving (a fifth acknowledged, or 20 s at most), which is when a commit
        # the API reports and PostgreSQL then loses would lose a job; and once a third of the jobs have ended
        # (or 40 s at most), with claims, renewals and ends in flight. PostgreSQL, or (--restart store) the
        # object store.
        def wait_for(condition, limit):
            while not done.is_set() and not condition() and time.time() - started < limit:
                time.sleep(0.2)
            return not done.is_set()

        def ended():
            try:
                return int(psql(database, "SELECT count(*) FROM jobs WHERE status IN ('FINISHED', 'FAILURE')") or 0)
            except subprocess.CalledProcessError:
                return 0

        for condition, limit in ((lambda: len(acknowledged) >= args.jobs // 5, 20),
                                 (lambda: ended() >= args.jobs // 3, 40)):
            if not wait_for(condition, limit):
                return
            if restart == "store":
                log("restarting the object store")
                subprocess.run([WEED, "stop"], check=True)
                time.sleep(2)
                subprocess.run([WEED, "start"], check=True, capture_output=True)
                pg_restarts.append(time.time())
                log("the object store is back")
                continue
            log("restarting PostgreSQL")
            subprocess.run([PG, "stop"], check=True)
            time.sleep(2)
            subprocess.run([PG, "start"], check=True, capture_output=True)
            pg_restarts.append(time.time())
            log("PostgreSQL is back")

    # The mix: cancels, deletes and re-OCRs of random acknowledged jobs while they are queued or running. Each
    # answer decides what the job must end as: 2xx is definite; 409 and 404 change nothing; anything else (a
    # 503 while PostgreSQL restarts, a lost answer) leaves the job "touched", allowed any end.
    mix = args.jobs // 5 if args.mix is None else args.mix
    cancelled, deleted, touched, reruns = set(), set(), set(), {}
    mixer_done = threading.Event()

    def mixer():
        rng = random.Random(1729)
        actions = 0
        try:
            while not done.is_set() and actions < mix:
                time.sleep(0.1)
                candidates = [job for job in list(acknowledged) if job not in touched and job not in cancelled
                              and job not in deleted]
                if len(acknowledged) < 10 or not candidates:
                    continue
                job = rng.choice(candidates)
                kind = rng.choice(["cancel", "delete", "rerun"])
                actions += 1
                try:
                    if kind == "cancel":
                        request("POST", f"{base}/v1/jobs/{job}/cancel", key)
                        cancelled.add(job)
                    elif kind == "delete":
                        request("DELETE", f"{base}/v1/jobs/{job}", key)
                        deleted.add(job)
                    else:
                        _, body = request("POST", f"{base}/v1/jobs/{job}/rerun", key, b"{}", "application/json")
                        reruns[json.loads(body)["id"]] = job
                except urllib.error.HTTPError as error:
                    if error.code not in (404, 409):
                        touched.add(job)
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                    touched.add(job)
        finally:
            mixer_done.set()

    killer = threading.Thread(target=chaos, daemon=True)
    restarter = threading.Thread(target=restart_postgres, daemon=True)
    mixing = threading.Thread(target=mixer, daemon=True)
    killer.start()
    restarter.start()
    mixing.start()

    log(f"submitting {args.jobs} jobs")
    # Most documents one by one; the last fifth in batches of five (POST /v1/batches, all or nothing).
    singles = len(paths) - len(paths) // 5
    units = [[path] for path in paths[:singles]] + [paths[i:i + 5] for i in range(singles, len(paths), 5)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        def submit_unit(unit):
            jobs = [submit(base, key, unit[0])] if len(unit) == 1 else submit_batch(base, key, unit)
            acknowledged.extend(jobs)
            return jobs

        ids = [job for jobs in pool.map(submit_unit, units) for job in jobs]
    token_of = {job: f"{index:04d}" for index, job in enumerate(ids)}

    deadline = started + args.timeout
    remaining = args.jobs
    while time.time() < deadline:
        try:
            remaining = int(psql(database, "SELECT count(*) FROM jobs WHERE status IS DISTINCT FROM 'FINISHED' AND status IS DISTINCT FROM 'FAILURE'"))
        except subprocess.CalledProcessError:
            remaining = -1
        if remaining == 0 and len(pg_restarts) == 2 and mixer_done.is_set():
            break
        time.sleep(1)
    done.set()
    killer.join()
    restarter.join()
    mixing.join()
    seconds = time.time() - started
    # The database's sessions while the processes still run: a stuck job is often a lock someone holds.
    backends = psql(database, "SELECT pid, application_name, state, wait_event_type, wait_event, now() - xact_start, "
                              "left(regexp_replace(query, '\\s+', ' ', 'g'), 160) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()") if remaining else ""
    lector.stop()

    # Every check is made on the ids the server acknowledged, not on table counts.
    status_of = dict(line.split("|") for line in psql(database, "SELECT id, coalesce(status, '-') FROM jobs").splitlines())
    attempts_of = dict(line.split("|") for line in psql(database, "SELECT id, attempts FROM jobs").splitlines())
    # Re-OCRs read their first job's document, so their results hold its number.
    for job, source in reruns.items():
        token_of[job] = token_of[source]
    everyone = list(ids) + list(reruns)
    # What each job must end as: FINISHED, unless the mix cancelled (FINISHED or FAILURE "cancelled": a cancel of
    # a running job can lose the race with its end), deleted (any end, no folder left, 410) or touched it.
    must_finish = [job for job in everyone if job not in cancelled and job not in deleted and job not in touched]
    finished = sum(1 for job in must_finish if status_of.get(job) == "FINISHED")
    reason_of = dict(line.split("|", 1) for line in psql(
        database, "SELECT DISTINCT ON (job_id) job_id, coalesce(reason, '') FROM job_transitions ORDER BY job_id, id DESC").splitlines())
    bad_cancels = [job for job in cancelled if job not in deleted and job not in touched and not (
        status_of.get(job) == "FINISHED" or (status_of.get(job) == "FAILURE" and reason_of.get(job) == "cancelled"))]
    # No orphaned files: a deleted job is marked deleted and its folder is gone. (Folders without any row are
    # those of submits whose outcome the API could not know; the sweeper removes them once they are old.)
    deleted_rows = set(psql(database, "SELECT id FROM jobs WHERE deleted_at IS NOT NULL").split())
    def folder_exists(job):
        if store:
            return bool(store.keys(f"{prefix}/{job}/"))
        return os.path.exists(os.path.join(storage, job))

    orphans = [job for job in deleted_rows if folder_exists(job)]
    # With object storage a delete may come while the store is restarting: the job is deleted, the API logs that
    # its objects could not be removed, and the sweeper removes them once they are old (ObjectStorageSweeperTests).
    # Those are counted apart; any other leftover is a defect.
    left_for_sweeper = []
    if store:
        with open(os.path.join(storage, "api.log"), errors="replace") as f:
            refused = {job for line in f if "could not remove a job's objects" in line
                       for job in orphans if f"job_id={job}" in line}
        left_for_sweeper = [job for job in orphans if job in refused]
        orphans = [job for job in orphans if job not in refused]
    not_gone = [job for job in deleted if job not in deleted_rows]
    extra = len(status_of) - len(set(everyone))
    double = int(psql(database, "SELECT count(*) FROM (SELECT job_id FROM job_transitions WHERE status = 'FINISHED' GROUP BY job_id HAVING count(*) > 1) d"))
    rescued = int(psql(database, "SELECT count(*) FROM job_transitions WHERE status = 'QUEUED' AND reason LIKE 'worker lost%'"))
    retried = int(psql(database, "SELECT count(*) FROM job_transitions WHERE status = 'QUEUED' AND reason LIKE 'retrying%'"))
    # Documents read as page tasks, and pages read more than once (their reader was killed, or retried).
    split_jobs = int(psql(database, "SELECT count(DISTINCT job_id) FROM page_tasks"))
    pages_reread = int(psql(database, "SELECT count(*) FROM page_tasks WHERE attempts > 1"))
    failures = psql(database, "SELECT string_agg(DISTINCT reason, ' | ') FROM job_transitions WHERE status = 'FAILURE'")
    mismatched = 0   # result text without the document's own number
    stale = 0        # result files written by an attempt other than the one that finished the job
    def read_result(job, name):
        if store:
            return store.request("GET", f"{prefix}/{job}/{name}")[1].decode("utf-8")
        with open(os.path.join(storage, job, name), encoding="utf-8") as f:
            return f.read()

    for job in must_finish:
        token = token_of[job]
        try:
            if token not in read_result(job, "result.txt"):
                mismatched += 1
            if str(json.loads(read_result(job, "result.json")).get("attempt")) != attempts_of.get(job):
                stale += 1
        except (OSError, ValueError):
            mismatched += 1
    # A crash is a defect even when nothing was lost (the rescuer hides it): Swift's runtime writes a backtrace
    # to the process's stderr, our log files.
    crashes = []
    for name in sorted(os.listdir(storage)):
        if name.endswith(".log"):
            with open(os.path.join(storage, name), errors="replace") as f:
                for line in f:
                    if "*** Signal" in line or "Fatal error" in line or "Precondition failed" in line:
                        crashes.append(f"{name}: {line.strip()[:200]}")
    if store:
        # Staged objects of killed attempts, and of discards that failed while the store restarted, stay until the
        # sweeper's age: counted, not an error.
        leftovers = sum(1 for k in store.keys(prefix + "/") if "/attempts/" in k)
        log(f"staged objects left for the sweeper (killed attempts, discards during the restart): {leftovers}")
        store.delete_prefix(prefix + "/")
    lost = len(must_finish) - finished
    print(f"chaos: jobs={args.jobs} finished={finished} lost={lost} double_finished={double} rescued={rescued} "
          f"retried={retried} split_jobs={split_jobs} pages_reread={pages_reread} mismatched={mismatched} stale_results={stale} extra_jobs={extra} kills={lector.kills} "
          f"{'store_restarts' if restart == 'store' else 'pg_restarts'}={len(pg_restarts)} storage={args.storage} "
          f"crashes={len(crashes)} cancelled={len(cancelled)} deleted={len(deleted)} "
          f"reruns={len(reruns)} touched={len(touched)} bad_cancels={len(bad_cancels)} orphaned_folders={len(orphans)} "
          f"{f'left_for_sweeper={len(left_for_sweeper)} ' if store else ''}"
          f"deletes_not_recorded={len(not_gone)} seconds={seconds:.0f}", flush=True)
    for line in crashes[:10]:
        log(f"crash: {line}")
    ok = (lost == 0 and double == 0 and mismatched == 0 and stale == 0 and len(set(ids)) == args.jobs
          and len(pg_restarts) == 2 and not crashes and not bad_cancels and not orphans and not not_gone)
    if not ok:
        log(f"FAILED (failure reasons: {failures or '-'}); logs in {storage}")
        for line in backends.splitlines():
            log(f"backend at the deadline: {line}")
        # What a lost job looked like at the end: its row, its lease, its history and what the logs say of it.
        for job in ([job for job in must_finish if status_of.get(job) != "FINISHED"] + bad_cancels + orphans + not_gone)[:5]:
            log(f"lost {job}: " + psql(database, f"SELECT status, attempts, not_before FROM jobs WHERE id = '{job}'"))
            log("  lease: " + (psql(database, f"SELECT worker, attempt, claimed_at, expires_at FROM job_leases WHERE job_id = '{job}'") or "-"))
            for line in psql(database, f"SELECT at, status, worker, reason FROM job_transitions WHERE job_id = '{job}' ORDER BY id").splitlines():
                log(f"  {line}")
            for name in sorted(os.listdir(storage)):
                if name.endswith(".log"):
                    with open(os.path.join(storage, name), errors="replace") as f:
                        for line in f:
                            if job in line:
                                log(f"  {name}: {line.rstrip()[:300]}")
        return 1
    shutil.rmtree(storage, ignore_errors=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
