#!/usr/bin/env python3
"""`lector submit` against a live API and worker (part of make test).

Two readable pages and a broken one with --wait: exit 1, two results with the words, the broken file's reason
printed; the same run again makes no new job (Idempotency-Key); a usage error is exit 2; an unreachable server
is exit 3; without --wait the job ids are printed and the exit is 0; SIGINT while waiting prints the submitted
ids and exits 130, and those jobs still finish. --format pdf asks the job for the PDF (the `formats` option) and
writes it. LECTOR_SUBMIT_DATABASE and LECTOR_SUBMIT_PORT keep two checkouts sharing a cluster apart.
"""
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
PORT = int(os.environ.get("LECTOR_SUBMIT_PORT", "18791"))
problems = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        problems.append(message)


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def render(path, text):
    subprocess.run(["/usr/bin/convert", "-size", "900x160", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "44",
                    "-fill", "black", "-annotate", "+30+100", text, "-depth", "8", path], check=True)


def main():
    work = tempfile.mkdtemp(prefix="lector-submit-")
    database = os.environ.get("LECTOR_SUBMIT_DATABASE", "lector_submit")
    # The private cluster, started here only when nothing answers (a cluster shared by checkouts already runs).
    if subprocess.run([PG, "psql", "-d", "postgres", "-tAc", "SELECT 1"], capture_output=True).returncode != 0:
        subprocess.run([PG, "start"], check=True, capture_output=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {database}")
    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{database}",
               LECTOR_STORAGE_ROOT=os.path.join(work, "storage"), LECTOR_HTTP_PORT=str(PORT), LECTOR_LOG_LEVEL="warning",
               LECTOR_WORKER_POLL_INTERVAL="0.2", OMP_THREAD_LIMIT="1")
    subprocess.run([BINARY, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True, capture_output=True)
    key = subprocess.run([BINARY, "keys", "create", "--user", "submitter"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    log = open(os.path.join(work, "processes.log"), "ab")
    api = subprocess.Popen([BINARY, "serve"], env=env, stdout=log, stderr=log)
    worker = subprocess.Popen([BINARY, "work"], env=env, stdout=log, stderr=log)
    client_env = dict(os.environ, LECTOR_URL=f"http://127.0.0.1:{PORT}", LECTOR_API_KEY=key)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        pages = os.path.join(work, "in")
        os.makedirs(pages)
        render(os.path.join(pages, "first.png"), "Lector submits this page")
        render(os.path.join(pages, "second.png"), "And this second one")
        with open(os.path.join(pages, "first.png"), "rb") as f:
            broken = f.read()[:300]
        with open(os.path.join(pages, "broken.png"), "wb") as f:
            f.write(broken)
        out = os.path.join(work, "out")
        files = [os.path.join(pages, name) for name in ("first.png", "second.png", "broken.png")]

        run = subprocess.run([BINARY, "submit", *files, "--wait", "--output", out], env=client_env, capture_output=True, text=True, timeout=180)
        check(run.returncode == 1, f"one failed document: exit 1 (got {run.returncode})")
        check("failed: broken.png:" in run.stderr and "could not be decoded" in run.stderr, "the failure's reason is printed")
        texts = {name: open(os.path.join(out, name)).read() if os.path.exists(os.path.join(out, name)) else "" for name in ("first.txt", "second.txt")}
        check("submits" in texts["first.txt"] and "second" in texts["second.txt"], f"results written: {texts}")
        jobs = psql(database, "SELECT count(*) FROM jobs")
        check(jobs == "3", f"three jobs (got {jobs})")

        again = subprocess.run([BINARY, "submit", *files[:2], "--wait", "--output", out], env=client_env, capture_output=True, text=True, timeout=180)
        check(again.returncode == 0, f"all finished: exit 0 (got {again.returncode}: {again.stderr[-300:]})")
        check(psql(database, "SELECT count(*) FROM jobs") == "3", "a second run finds the same jobs (Idempotency-Key)")

        # --format pdf asks the job for the PDF (formats), which a job makes only when asked: a new job, its PDF written.
        pdf = subprocess.run([BINARY, "submit", files[0], "--format", "pdf", "--mode", "document", "--wait", "--output", out],
                             env=client_env, capture_output=True, text=True, timeout=180)
        written = open(os.path.join(out, "first.pdf"), "rb").read(5) if os.path.exists(os.path.join(out, "first.pdf")) else b""
        check(pdf.returncode == 0 and written == b"%PDF-", f"--format pdf: exit 0 and first.pdf written ({pdf.returncode} {written!r} {pdf.stderr[-200:]})")
        options = psql(database, "SELECT options::text FROM jobs ORDER BY created_at DESC LIMIT 1")
        check('"pdf"' in options and psql(database, "SELECT count(*) FROM jobs") == "4", f"a job of its own that lists pdf: {options}")

        usage = subprocess.run([BINARY, "submit", "--format", "docx", files[0]], env=client_env, capture_output=True, text=True, timeout=60)
        check(usage.returncode == 2, f"a usage error: exit 2 (got {usage.returncode})")
        nothing = subprocess.run([BINARY, "submit"], env=client_env, capture_output=True, text=True, timeout=60)
        check(nothing.returncode == 2, f"no file: exit 2 (got {nothing.returncode})")
        down = subprocess.run([BINARY, "submit", files[0]], env=dict(client_env, LECTOR_URL="http://127.0.0.1:9"),
                              capture_output=True, text=True, timeout=120)
        check(down.returncode == 3, f"an unreachable server: exit 3 (got {down.returncode})")

        render(os.path.join(pages, "third.png"), "Printed and left running")
        plain = subprocess.run([BINARY, "submit", os.path.join(pages, "third.png")], env=client_env, capture_output=True, text=True, timeout=60)
        check(plain.returncode == 0 and plain.stdout.strip().endswith("third.png"), f"without --wait: the job id is printed ({plain.stdout.strip()})")

        # Ctrl-C while waiting: the submitted ids are printed, and the job goes on.
        worker.send_signal(signal.SIGSTOP)  # keep the job queued while we wait
        render(os.path.join(pages, "fourth.png"), "Interrupted but not lost")
        waiting = subprocess.Popen([BINARY, "submit", os.path.join(pages, "fourth.png"), "--wait", "--output", out],
                                   env=client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while time.time() < deadline and psql(database, "SELECT count(*) FROM jobs WHERE document_name = 'fourth.png'") != "1":
            time.sleep(0.2)
        time.sleep(0.5)
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=30)
        job = psql(database, "SELECT id FROM jobs WHERE document_name = 'fourth.png'")
        check(waiting.returncode == 130 and job in err, f"SIGINT: exit 130 and the job id printed ({waiting.returncode})")
        worker.send_signal(signal.SIGCONT)
        deadline = time.time() + 60
        while time.time() < deadline and psql(database, f"SELECT status FROM jobs WHERE id = '{job}'") != "FINISHED":
            time.sleep(0.3)
        check(psql(database, f"SELECT status FROM jobs WHERE id = '{job}'") == "FINISHED", "the interrupted run's job still finished")
    finally:
        worker.send_signal(signal.SIGCONT)
        for process in (api, worker):
            process.send_signal(signal.SIGTERM)
        for process in (api, worker):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    if problems:
        print(f"submit: {len(problems)} problem(s); logs kept in {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("submit: all checks passed")


if __name__ == "__main__":
    main()
