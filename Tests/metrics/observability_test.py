#!/usr/bin/env python3
"""Metrics and logs of a live API and worker, read back by a real Prometheus (Debian's `prometheus`).

Starts an API (JSON logs) and a worker with its metrics listener, and a Prometheus scraping both every second;
submits jobs (two that finish, one that fails); then checks through PromQL that the counters say so, that
`promtool check metrics` accepts both expositions (HELP and TYPE for every family), that no label carries an id,
that every log line is one JSON object with time, level and message, that `X-Request-Id` is echoed and logged,
and that neither the API key nor a result link's signature appears in any log. Then `lector work
--exit-when-idle` must exit 0 on an empty queue.

    Tests/metrics/observability_test.py            (part of make test)
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")
BINARY = os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector"))
API_PORT = int(os.environ.get("LECTOR_OBS_PORT", "18681"))
METRICS_PORT = API_PORT + 1
PROM_PORT = API_PORT + 2
problems = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        problems.append(message)


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def http(method, url, key=None, body=None, headers=None, follow=True):
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect())
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_for(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def promql(query):
    url = f"http://127.0.0.1:{PROM_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    data = json.loads(urllib.request.urlopen(url, timeout=10).read())
    return data["data"]["result"]


def render(path, text):
    subprocess.run(["/usr/bin/convert", "-size", "900x160", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "44",
                    "-fill", "black", "-annotate", "+30+100", text, "-depth", "8", path], check=True)


def main():
    work = tempfile.mkdtemp(prefix="lector-obs-")
    database = "lector_obs"
    subprocess.run([PG, "start"], check=True, capture_output=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {database}")
    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{database}",
               LECTOR_STORAGE_ROOT=os.path.join(work, "storage"), LECTOR_HTTP_PORT=str(API_PORT),
               LECTOR_METRICS_PORT=str(METRICS_PORT), LECTOR_LOG_FORMAT="json", LECTOR_LOG_LEVEL="info",
               LECTOR_WORKER_POLL_INTERVAL="0.2", OMP_THREAD_LIMIT="1")
    subprocess.run([BINARY, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True, capture_output=True)
    key = subprocess.run([BINARY, "keys", "create", "--user", "observer"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    api_log, worker_log = os.path.join(work, "api.log"), os.path.join(work, "worker.log")
    api_env = dict(env, LECTOR_METRICS_PORT="0")
    api = subprocess.Popen([BINARY, "serve"], env=api_env, stderr=open(api_log, "wb"))
    worker = subprocess.Popen([BINARY, "work"], env=env, stderr=open(worker_log, "wb"))
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: api
    static_configs: [{{targets: ["127.0.0.1:{API_PORT}"]}}]
  - job_name: worker
    static_configs: [{{targets: ["127.0.0.1:{METRICS_PORT}"]}}]
""")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
         f"--web.listen-address=127.0.0.1:{PROM_PORT}"], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.log"), "wb"))
    try:
        check(wait_for(f"http://127.0.0.1:{API_PORT}/healthz"), "the API answers")
        check(wait_for(f"http://127.0.0.1:{METRICS_PORT}/healthz"), "the worker's metrics listener answers /healthz")
        check(wait_for(f"http://127.0.0.1:{PROM_PORT}/-/ready"), "Prometheus is ready")

        # Two jobs that finish, one that fails (a truncated PNG), and a request with our own id.
        ids = []
        for index in range(2):
            path = os.path.join(work, f"page{index}.png")
            render(path, f"observed page {index}")
            status, headers, body = http("POST", f"http://127.0.0.1:{API_PORT}/v1/jobs?mode=document", key,
                                         open(path, "rb").read(), {"Content-Type": "image/png", "X-Request-Id": f"obs-test-{index}"})
            check(status == 202, f"submit {index} answered 202")
            check(headers.get("X-Request-Id") == f"obs-test-{index}", "X-Request-Id is echoed")
            ids.append(json.loads(body)["id"])
        broken = open(os.path.join(work, "page0.png"), "rb").read()[:200]
        status, headers, body = http("POST", f"http://127.0.0.1:{API_PORT}/v1/jobs", key, broken, {"Content-Type": "image/png"})
        check(status == 202 and bool(headers.get("X-Request-Id")), "a request id is made when none is sent")
        ids.append(json.loads(body)["id"])
        signatures = []
        for job in ids:
            status, headers, _ = http("GET", f"http://127.0.0.1:{API_PORT}/v1/jobs/{job}/result?wait=60", key, follow=False)
            if status == 302:
                link = headers["Location"]
                signatures.append(urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["signature"][0])
                status, _, _ = http("GET", f"http://127.0.0.1:{API_PORT}{link}")
                check(status == 200, "the signed link answers")
        check(len(signatures) == 2, "two jobs finished")

        # Prometheus scrapes both; wait until it has seen the ended jobs.
        deadline = time.time() + 90
        finished = failed = submitted = 0.0
        while time.time() < deadline:
            try:
                finished = sum(float(r["value"][1]) for r in promql("sum(lector_jobs_finished_total)"))
                failed = sum(float(r["value"][1]) for r in promql("sum(lector_jobs_failed_total)"))
                submitted = sum(float(r["value"][1]) for r in promql("sum(lector_jobs_submitted_total)"))
            except (OSError, KeyError, ValueError):
                pass
            if finished == 2 and failed == 1 and submitted == 3:
                break
            time.sleep(1)
        check(submitted == 3, f"PromQL: 3 jobs submitted (got {submitted})")
        check(finished == 2, f"PromQL: 2 jobs finished (got {finished})")
        check(failed == 1, f"PromQL: 1 job failed (got {failed})")
        posts = promql('sum(lector_http_request_duration_seconds_count{route="/v1/jobs",method="POST",status="202"})')
        check(bool(posts) and float(posts[0]["value"][1]) == 3, "PromQL: 3 POST /v1/jobs answered 202, by route template")
        pages = promql('sum(lector_pages_processed_total{mode="document"})')
        check(bool(pages) and float(pages[0]["value"][1]) >= 2, "PromQL: pages processed by the document pipeline")
        # Stage times: one observation per attempt and stage (2 finished jobs, 1 failed: 3 attempts at least read
        # their document); the engine's CPU is positive (Tesseract read two pages).
        reads = promql('sum(lector_job_stage_seconds_count{stage="recognize"})')
        check(bool(reads) and float(reads[0]["value"][1]) >= 2, f"PromQL: recognize stage times recorded ({reads})")
        ends = promql('sum(lector_job_stage_seconds_count{stage="end"})')
        check(bool(ends) and float(ends[0]["value"][1]) == 3, f"PromQL: an end stage time per attempt ({ends})")
        engine_cpu = promql("sum(lector_engine_cpu_seconds_total)")
        check(bool(engine_cpu) and float(engine_cpu[0]["value"][1]) > 0, f"PromQL: the engines' CPU seconds ({engine_cpu})")
        slots = promql("lector_worker_slots")
        check(bool(slots) and float(slots[0]["value"][1]) == 1, "PromQL: the worker reports its slots")
        queued = promql('lector_queue_jobs{status="QUEUED"}')
        check(bool(queued), "PromQL: queue depth is reported")
        uploaded = promql("sum(lector_uploaded_bytes_total)")
        check(bool(uploaded) and float(uploaded[0]["value"][1]) > 0, "PromQL: uploaded bytes")

        # promtool on both expositions; no id in any label.
        for name, url in (("api", f"http://127.0.0.1:{API_PORT}/metrics"), ("worker", f"http://127.0.0.1:{METRICS_PORT}/metrics")):
            text = urllib.request.urlopen(url, timeout=10).read()
            result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
            check(result.returncode == 0, f"promtool check metrics accepts the {name}'s exposition "
                                          f"{result.stdout.decode()[:300]}{result.stderr.decode()[:300]}")
            check(not any(job in text.decode() for job in ids), f"no job id in the {name}'s labels")
            check(key not in text.decode(), f"no key in the {name}'s metrics")
    finally:
        for process in (prometheus, api, worker):
            process.send_signal(signal.SIGTERM)
        for process in (prometheus, api, worker):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()

    # Logs: JSON lines; the request id and the job id are there; the key and the signatures are not.
    for name, path in (("api", api_log), ("worker", worker_log)):
        lines = [line for line in open(path, encoding="utf-8", errors="replace").read().splitlines() if line.strip()]
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                check(False, f"{name} log line is JSON: {line[:120]}")
        check(bool(parsed) and all({"time", "level", "message"} <= set(entry) for entry in parsed),
              f"every {name} log line has time, level and message ({len(parsed)} lines)")
        text = open(path, encoding="utf-8", errors="replace").read()
        check(key not in text and key.split("_")[-1] not in text, f"the API key is not in the {name} log")
        check(not any(signature in text for signature in signatures), f"no link signature in the {name} log")
        check("signature=" not in text and "expires=" not in text, f"no query string in the {name} log")
    api_entries = [json.loads(line) for line in open(api_log) if line.strip()]
    check(any(entry.get("request_id") == "obs-test-0" for entry in api_entries), "the API log carries the client's request_id")
    check(any(entry.get("job_id") == ids[0] for entry in api_entries), "the API log carries job_id")
    worker_entries = [json.loads(line) for line in open(worker_log) if line.strip()]
    check(any(entry.get("job_id") == ids[0] and "worker" in entry for entry in worker_entries),
          "the worker log carries job_id and worker")

    # --exit-when-idle on an empty queue: exits 0 on its own.
    started = time.time()
    idle = subprocess.run([BINARY, "work", "--exit-when-idle"], env=dict(env, LECTOR_METRICS_PORT="0"),
                          capture_output=True, timeout=120)
    check(idle.returncode == 0, f"lector work --exit-when-idle exits 0 on an empty queue ({time.time() - started:.1f} s)")

    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    if problems:
        print(f"observability: {len(problems)} problem(s); logs kept in {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("observability: all checks passed")


if __name__ == "__main__":
    main()
