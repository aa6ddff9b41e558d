#!/usr/bin/env python3
"""`lector watch` never loses nor duplicates a file (part of make test).

Drops 200 small documents into a hot folder, in waves, while the API is SIGKILLed and restarted twice and the
watcher itself is SIGKILLed once and restarted; then checks that every file ends with exactly one result in the
output folder and its original in done/, that the server holds exactly one job per file, and that a second
watcher on the same folder refuses to start. The worker runs the no-op engine: this is about the queue and the
client, not OCR.

    Tests/clients/watch_test.py [--files 200]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")
BINARY = os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector"))
PORT = int(os.environ.get("LECTOR_WATCH_PORT", "18781"))
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lector-watch-")
    database = "lector_watch"
    subprocess.run([PG, "start"], check=True, capture_output=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {database}")
    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{database}",
               LECTOR_STORAGE_ROOT=os.path.join(work, "storage"), LECTOR_HTTP_PORT=str(PORT), LECTOR_LOG_LEVEL="warning",
               LECTOR_ENGINE="noop", LECTOR_WORKER_POLL_INTERVAL="0.2", LECTOR_RATE_LIMIT="100000", LECTOR_RATE_BURST="100000",
               OMP_THREAD_LIMIT="1")
    subprocess.run([BINARY, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True, capture_output=True)
    key = subprocess.run([BINARY, "keys", "create", "--user", "watcher"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    inbox, outbox = os.path.join(work, "in"), os.path.join(work, "out")
    os.makedirs(inbox)
    log = open(os.path.join(work, "processes.log"), "ab")
    watch_env = dict(env, LECTOR_URL=f"http://127.0.0.1:{PORT}", LECTOR_API_KEY=key)

    def start_api():
        process = subprocess.Popen([BINARY, "serve"], env=env, stdout=log, stderr=log)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        return process

    def start_watcher():
        return subprocess.Popen([BINARY, "watch", inbox, "--output", outbox, "--settle", "0.3"], env=watch_env, stdout=log, stderr=log)

    api = start_api()
    worker = subprocess.Popen([BINARY, "work"], env=env, stdout=log, stderr=log)
    watcher = start_watcher()
    problems = []
    try:
        time.sleep(1)
        second = subprocess.run([BINARY, "watch", inbox, "--output", outbox], env=watch_env, capture_output=True, text=True, timeout=30)
        if second.returncode != 2 or "another watcher" not in second.stderr:
            problems.append(f"a second watcher started: {second.returncode} {second.stderr[:200]}")

        waves = 5
        per_wave = args.files // waves
        for wave in range(waves):
            for index in range(wave * per_wave, (wave + 1) * per_wave if wave < waves - 1 else args.files):
                # Unique bytes per file (a trailing comment chunk is not needed: the name is in the key too).
                path = os.path.join(inbox, f"doc-{index:04d}.png")
                with open(path + ".part", "wb") as f:
                    f.write(PNG)
                os.rename(path + ".part", path)
            time.sleep(0.7)
            if wave in (1, 3):
                api.send_signal(signal.SIGKILL)
                api.wait()
                time.sleep(1.5)
                api = start_api()
            if wave == 2:
                watcher.send_signal(signal.SIGKILL)
                watcher.wait()
                watcher = start_watcher()

        deadline = time.time() + 300
        while time.time() < deadline:
            done = len([n for n in os.listdir(os.path.join(inbox, "done")) if not n.startswith(".")]) if os.path.isdir(os.path.join(inbox, "done")) else 0
            if done >= args.files:
                break
            time.sleep(1)
    finally:
        for process in (watcher, api, worker):
            process.send_signal(signal.SIGTERM)
        for process in (watcher, api, worker):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    names = [f"doc-{i:04d}.png" for i in range(args.files)]
    done = set(os.listdir(os.path.join(inbox, "done")))
    results = set(os.listdir(outbox))
    failed = [n for n in os.listdir(os.path.join(inbox, "failed"))]
    left = [n for n in os.listdir(inbox) if n.endswith(".png")]
    missing_done = [n for n in names if n not in done]
    missing_result = [n for n in names if n + ".txt" not in results]
    jobs = psql(database, "SELECT count(*), count(DISTINCT document_name) FROM jobs").split("|")
    per_file = psql(database, "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM jobs GROUP BY document_name) t")
    if missing_done:
        problems.append(f"{len(missing_done)} originals not in done/: {missing_done[:5]}")
    if missing_result:
        problems.append(f"{len(missing_result)} results missing: {missing_result[:5]}")
    if failed:
        problems.append(f"files in failed/: {failed[:5]}")
    if left:
        problems.append(f"files left in the folder: {left[:5]}")
    if jobs != [str(args.files), str(args.files)] or per_file != "1":
        problems.append(f"the server holds {jobs[0]} jobs for {jobs[1]} files (most for one file: {per_file})")
    print(f"watch: files={args.files} done={len(done & set(names))} results={len(results)} jobs={jobs[0]} "
          f"distinct={jobs[1]} api_kills=2 watcher_kills=1 problems={len(problems)}")
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    if problems:
        for problem in problems:
            print(f"watch: {problem}")
        print(f"watch: logs kept in {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
