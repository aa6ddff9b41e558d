#!/usr/bin/env python3
"""The client side of `make cluster` (deploy/scripts/cluster.sh sets up the hosts and runs this from the root
network namespace, the outside).

Renders JOBS one-line documents ("Cluster 0042"), submits them through HTTP to the API's address, tears down
one worker host (--teardown, a command) once a quarter of the jobs have ended and that worker holds leases
(read while its processes are stopped with --freeze, so that they are exactly the jobs it dies with),
waits for every job to end, then checks:

- every acknowledged job is FINISHED, with exactly one FINISHED transition, and no other job exists;
- the jobs the torn-down worker held were requeued ("worker lost") and finished by another worker;
- each result (GET /v1/jobs/{id}/result?format=txt: a 302 to the store, followed) holds its document's number;
- the store holds each job's document, metadata.json and results under its prefix; staged attempt objects
  remain only under jobs the torn-down worker ran (killed attempts, and a job it ended just before it died,
  whose staging it had not yet deleted: the sweeper's, after LECTOR_ABANDONED_AGE);
- on every host's local disk (--hosts: one folder per host with cwd/, home/, tmp/, storage/, logs/) there is no
  file outside logs/ (but, on the torn-down host, the engine's scratch folder of an attempt killed while it
  rendered, which a worker restarted there would sweep), and LECTOR_STORAGE_ROOT (storage/) was never
  created; no crash in any log.

Standard library only; the store is read with Tests/storage/s3_e2e.py's signer (LECTOR_TEST_S3_* from weed.sh env).
"""
import argparse
import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "Tests", "storage"))
from s3_e2e import Store, store_env  # noqa: E402


def log(message):
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def psql(url, sql):
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-tAc", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def render(directory, index):
    path = os.path.join(directory, f"doc-{index:04d}.png")
    subprocess.run(["nice", "-n", "10", "/usr/bin/convert", "-size", "560x110", "xc:white", "-font", "DejaVu-Sans",
                    "-pointsize", "40", "-fill", "black", "-annotate", "+20+70", f"Cluster {index:04d}", "-depth", "8",
                    path], check=True)
    return path


def request(method, url, key=None, body=None, content_type=None, timeout=30, headers=None):
    req = urllib.request.Request(url, data=body, method=method)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return response.status, response.geturl(), response.read()


RUN = os.urandom(4).hex()


def submit(base, key, path):
    """Submits until the API acknowledges (202); returns (job id, seconds of the acknowledged request). With an
    Idempotency-Key, as a client that retries should: a request that timed out but committed is answered by its
    retry with the same job (a host torn down inside a transaction can hold a lock that submits wait for until
    PostgreSQL's keepalives end its connection)."""
    with open(path, "rb") as f:
        data = f.read()
    idempotency = {"Idempotency-Key": f"cluster-{RUN}-{os.path.basename(path)}"}
    delay = 0.2
    for _ in range(30):
        try:
            started = time.time()
            status, _, body = request("POST", f"{base}/v1/jobs", key, data, "image/png", headers=idempotency)
            if status == 202:
                return json.loads(body)["id"], time.time() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            log(f"submit retried: {error}")
        time.sleep(delay)
        delay = min(delay * 2, 3)
    raise RuntimeError(f"{path} was never acknowledged")


def local_files(hosts):
    """Files on the hosts' local disks outside logs/, and storage roots that appeared."""
    found, roots = [], []
    for host in sorted(os.listdir(hosts)):
        if os.path.exists(os.path.join(hosts, host, "storage")):
            roots.append(host)
        for dirpath, _, filenames in os.walk(os.path.join(hosts, host)):
            if os.path.relpath(dirpath, os.path.join(hosts, host)).split(os.sep)[0] == "logs":
                continue
            found += [os.path.relpath(os.path.join(dirpath, f), hosts) for f in filenames]
    return found, roots


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--key", default=os.environ.get("LECTOR_CLUSTER_KEY"), help="API key (or LECTOR_CLUSTER_KEY)")
    parser.add_argument("--database", required=True, help="postgres:// URL of the cluster's database")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--documents", help="folder for the rendered documents (removed at the end)")
    parser.add_argument("--kill", default="w2", help="LECTOR_WORKER_ID of the worker host torn down mid-run")
    parser.add_argument("--teardown", required=True, help="command that tears that host down")
    parser.add_argument("--kill-address", default="10.77.12.12", help="that host's address (pg_stat_activity)")
    parser.add_argument("--freeze", required=True, help="command that SIGSTOPs that host's processes")
    parser.add_argument("--thaw", required=True, help="command that SIGCONTs them")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    store = Store(store_env())
    db = args.database
    problems = []

    def check(ok, what):
        print(f"cluster: {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            problems.append(what)

    scratch = args.documents or tempfile.mkdtemp(prefix="lector-cluster-docs-")
    os.makedirs(scratch, exist_ok=True)
    log(f"rendering {args.jobs} documents")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda i: render(scratch, i), range(args.jobs)))

    started = time.time()
    torn = {}

    def teardown():
        """Once a quarter of the jobs ended and the worker holds leases: its host goes, jobs in hand."""
        while time.time() - started < args.timeout:
            done = int(psql(db, "SELECT count(*) FROM jobs WHERE status = 'FINISHED'"))
            held = psql(db, f"SELECT string_agg(job_id::text, ' ') FROM job_leases WHERE worker LIKE '{args.kill}/%'")
            if done >= args.jobs // 4 and held:
                # Frozen (SIGSTOP), it can neither end nor claim a job: what it holds now is what it dies with.
                subprocess.run(shlex.split(args.freeze), check=True)
                held = psql(db, f"SELECT string_agg(job_id::text, ' ') FROM job_leases WHERE worker LIKE '{args.kill}/%'")
                # The hardest moment: one of its connections inside a transaction that locks lease rows (ending a
                # job, renewing a lease). Wait for one (up to 100 tries), then take any moment it holds jobs.
                open_tx = int(psql(db, "SELECT count(DISTINCT a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                                       f"WHERE a.client_addr = '{args.kill_address}' AND a.xact_start IS NOT NULL "
                                       "AND l.relation = 'job_leases'::regclass AND l.mode IN ('RowShareLock', 'RowExclusiveLock')"))
                tries = torn.get("tries", 0) + 1
                torn["tries"] = tries
                if not held or (not open_tx and tries < 100):
                    subprocess.run(shlex.split(args.thaw), check=True)
                    time.sleep(0.05)
                    continue
                torn["open_tx"] = open_tx
                torn["held"] = set(held.split())
                torn["done"] = done
                torn["finished_by_it"] = int(psql(db, f"SELECT count(*) FROM job_transitions WHERE status = 'FINISHED' AND worker LIKE '{args.kill}/%'"))
                subprocess.run(shlex.split(args.teardown), check=True)
                torn["at"] = time.time() - started
                return
            time.sleep(0.2)

    killer = threading.Thread(target=teardown, daemon=True)
    killer.start()
    log(f"submitting {args.jobs} jobs to {args.api}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        submitted = list(pool.map(lambda p: submit(args.api, args.key, p), paths))
    ids = [job for job, _ in submitted]
    number_of = {job: f"{i:04d}" for i, job in enumerate(ids)}
    latencies = sorted(s for _, s in submitted)
    log(f"submitted in {time.time() - started:.1f} s; submit p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms")

    while time.time() - started < args.timeout:
        left = int(psql(db, "SELECT count(*) FROM jobs WHERE status NOT IN ('FINISHED', 'FAILURE') OR status IS NULL"))
        if left == 0 and not killer.is_alive():
            break
        time.sleep(0.5)
    seconds = time.time() - started
    killer.join(timeout=1)

    check(len(set(ids)) == args.jobs, f"{len(set(ids))} distinct jobs acknowledged of {args.jobs}")
    status_of = dict(line.split("|") for line in psql(db, "SELECT id, status FROM jobs").splitlines())
    finished = sum(1 for job in ids if status_of.get(job) == "FINISHED")
    check(finished == args.jobs, f"{finished} of {args.jobs} FINISHED in {seconds:.0f} s "
          f"(others: {sorted(set(status_of.values()) - {'FINISHED'})})")
    check(len(status_of) == args.jobs, f"{len(status_of)} jobs in the database (no extra)")
    counts = dict(line.split("|") for line in psql(
        db, "SELECT job_id, count(*) FROM job_transitions WHERE status = 'FINISHED' GROUP BY job_id").splitlines())
    once = sum(1 for job in ids if counts.get(job) == "1")
    check(once == args.jobs, f"{once} jobs with exactly one FINISHED transition "
          f"(more than one: {sum(1 for c in counts.values() if int(c) > 1)})")

    check("at" in torn, f"host {args.kill} torn down mid-run: after {torn.get('done')} jobs had finished "
          f"({torn.get('finished_by_it')} by {args.kill}), at {torn.get('at', 0):.1f} s, holding {len(torn.get('held', ()))} jobs, "
          f"{torn.get('open_tx', 0)} of its connections inside a transaction on job_leases (try {torn.get('tries')})")
    held = sorted(torn.get("held", ()))
    rescued, bad = [], []
    for job in held:
        rows = psql(db, f"SELECT status, coalesce(worker, ''), coalesce(reason, '') FROM job_transitions "
                        f"WHERE job_id = '{job}' ORDER BY id").splitlines()
        lost = any(r.startswith("QUEUED|") and "worker lost" in r for r in rows)
        by = [r.split("|")[1] for r in rows if r.startswith("FINISHED|")]
        if lost and by and not by[0].startswith(f"{args.kill}/"):
            rescued.append((job, by[0]))
        else:
            bad.append((job, rows))
    check(rescued and not bad,
          f"of the {len(held)} jobs {args.kill} held, {len(rescued)} were requeued (worker lost) and finished by "
          f"another worker ({', '.join(f'{j[:8]} by {w}' for j, w in rescued)})" + (f"; not: {bad[:3]}" if bad else ""))
    by_worker = psql(db, "SELECT host || '=' || count(*) FROM (SELECT split_part(worker, '/', 1) AS host "
                         "FROM job_transitions WHERE status = 'FINISHED') f GROUP BY host ORDER BY host").replace("\n", " ")
    log(f"finished by worker host: {by_worker}")

    # Results through the API: a 302 to the store's presigned URL (on the store host's address), followed.
    def result(job):
        try:
            status, url, body = request("GET", f"{args.api}/v1/jobs/{job}/result?format=txt", args.key)
            return status, url, body.decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as error:
            return 0, "", str(error)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(ids, pool.map(result, ids)))
    store_host = urllib.parse.urlparse(store.endpoint).netloc
    wrong = [job for job in ids if not (results[job][0] == 200 and urllib.parse.urlparse(results[job][1]).netloc == store_host
                                        and number_of[job] in results[job][2])]
    check(not wrong, f"{args.jobs - len(wrong)} results read from the store ({store_host}, via the API's 302) hold "
          f"their document's number" + (f"; wrong: {[(j[:8], results[j][2][:40]) for j in wrong[:5]]}" if wrong else ""))

    # The store: every job's objects; staged attempts only of the torn-down worker's attempts.
    keys = store.keys("jobs/")
    by_job = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) >= 3:
            by_job.setdefault(parts[1], []).append("/".join(parts[2:]))
    missing = [job for job in ids if not {"document.png", "metadata.json", "result.txt", "result.json"} <= set(by_job.get(job, []))]
    check(not missing, f"every job's prefix holds document.png, metadata.json, result.txt, result.json ({len(keys)} objects)"
          + (f"; missing in {missing[:5]}" if missing else ""))
    staged = sorted({job for job, names in by_job.items() for n in names if n.startswith("attempts/")})
    # A killed attempt's staged objects stay, and so do those of a job the worker had just ended: it deletes
    # them after the end transaction, and may die in between. Both only on jobs the torn-down worker ran.
    ran = set(psql(db, f"SELECT DISTINCT job_id FROM job_transitions WHERE status = 'IN_PROGRESS' AND worker LIKE '{args.kill}/%'").split())
    stray = [(job, [n for n in by_job[job] if n.startswith("attempts/")],
              psql(db, f"SELECT string_agg(status || ':' || coalesce(worker, '') || ':' || coalesce(reason, ''), ' > ' ORDER BY id) "
                       f"FROM job_transitions WHERE job_id = '{job}'")) for job in staged if job not in ran]
    check(not stray, f"staged attempt objects left only under jobs {args.kill} ran "
          f"({len(staged)}: the sweeper's after LECTOR_ABANDONED_AGE)" + (f"; others: {stray[:3]}" if stray else ""))
    unknown = sorted(set(by_job) - set(ids))
    check(not unknown, f"no prefix of an unknown job ({unknown[:5]})")

    found, roots = local_files(args.hosts)
    # A worker killed while the engine renders leaves its scratch folder (tmp/lector-scratch-<pid>-…), which the
    # next worker on that host sweeps (ScratchFolder.sweep): allowed on the torn-down host only.
    scratch_left = [f for f in found if f.startswith(f"{args.kill}/tmp/lector-scratch-")]
    found = [f for f in found if f not in scratch_left]
    check(not found, f"no file on any host's local disk outside logs/ ({', '.join(sorted(os.listdir(args.hosts)))}; "
          f"engine scratch of the killed attempts on {args.kill}: {len(scratch_left)})"
          + (f"; found: {found[:10]}" if found else ""))
    check(not roots, f"no LECTOR_STORAGE_ROOT was created ({roots})")
    crashes = []
    for host in sorted(os.listdir(args.hosts)):
        logs = os.path.join(args.hosts, host, "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as f:
                crashes += [f"{host}/{name}: {line.strip()[:160]}" for line in f
                            if "*** Signal" in line or "Fatal error" in line or "Precondition failed" in line]
    check(not crashes, f"no crash in any log{': ' + '; '.join(crashes[:3]) if crashes else ''}")

    shutil.rmtree(scratch, ignore_errors=True)
    print(f"cluster: jobs={args.jobs} finished={finished} exactly_once={once} rescued={len(rescued)} "
          f"finished_by={by_worker.replace(' ', ',')} staged_left={len(staged)} local_files={len(found)} "
          f"killed_scratch={len(scratch_left)} killed_in_transaction={torn.get('open_tx', 0)} "
          f"seconds={seconds:.0f} problems={len(problems)}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
