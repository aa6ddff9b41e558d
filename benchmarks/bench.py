#!/usr/bin/env python3
"""Lector's benchmarks, side by side in one run (these machines are shared and noisy).

    benchmarks/bench.py p1 [--files 39] [--rounds 3] [--formats json,txt,hocr,pdf]
                                                        throughput: tesseract CLI vs engine loop vs service
    benchmarks/bench.py p2 [--history 1000 1000000]     claim latency vs finished history
    benchmarks/bench.py p3 [--seconds 5]                queue throughput, no-op engine, 1/2/4 workers, both claims
    benchmarks/bench.py p4 [--jobs 40]                  wake-up latency: NOTIFY vs polling
    benchmarks/bench.py p5 [--waiters 1000]             1,000 long-poll waiters: API RSS and answer delay
    benchmarks/bench.py p6 [--photos 50] [--rounds 3]   scene pipeline: lector ocr --mode scene vs OpenCV+pytesseract
    benchmarks/bench.py p7 [--noop 10000 --real 500]    worker RSS across many jobs
    benchmarks/bench.py s3 [--files 39] [--rounds 4]    object storage (SeaweedFS) vs local files: throughput, submit latency
    benchmarks/bench.py e1 [--subscribers 1000]         live events: API RSS and delivery delay with 1,000 SSE subscribers
    benchmarks/bench.py h1 [--uploads 2 8] [--concurrent 30]  hostile uploads: /healthz latency, API RSS
    benchmarks/bench.py h2 [--clients 50]               trickling clients: how soon they are closed
    benchmarks/bench.py h3 [--megapixels 10 30 60]      worker peak memory per megapixel, per pipeline
    benchmarks/bench.py all --small                     every measure at a small size (make bench)

Uses the project's private PostgreSQL cluster (a database per measure), the lector binaries in
LECTOR_BIN_DIR (default .build/release, else .build/debug), wrk, hyperfine and the tesseract CLI from Debian.
Receipts and scene photos are read from ../shared/data (research use only, never copied). P6 needs
.venv-bench (benchmarks/setup-bench-venv.sh; Debian's python3-opencv via deploy/scripts/deps.sh bench) and
is skipped with a message without it. `s3` starts the private SeaweedFS (deploy/scripts/weed.sh; its `weed` from
.venv-s3, made by deploy/scripts/deps.sh, or WEED) and stops it again if it started it.
"""
import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")
DATA = os.environ.get("LECTOR_BENCH_DATA", os.path.join(ROOT, "..", "shared", "data", "receipts-sroie", "images"))
BIN_DIR = os.environ.get("LECTOR_BIN_DIR") or (
    os.path.join(ROOT, ".build", "release") if os.path.exists(os.path.join(ROOT, ".build", "release", "lector"))
    else os.path.join(ROOT, ".build", "debug"))
LECTOR = os.path.join(BIN_DIR, "lector")
BENCH = os.path.join(BIN_DIR, "lector-bench")
PG_PORT = os.environ.get("LECTOR_PG_PORT", "54329")
HTTP_PORT = int(os.environ.get("LECTOR_BENCH_PORT", "18383"))


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def ensure_pg():
    """Starts the private cluster unless one already answers on LECTOR_PG_PORT (e.g. a cluster shared by several
    checkouts: starting another one here would only collide on the port)."""
    if subprocess.run([PG, "psql", "-d", "postgres", "-tAc", "SELECT 1"], capture_output=True).returncode != 0:
        subprocess.run([PG, "start"], check=True, capture_output=True)


def stats(values, fmt="%.3f"):
    values = sorted(values)
    return f"min {fmt % values[0]}  median {fmt % statistics.median(values)}  max {fmt % values[-1]}"


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int((len(values) - 1) * q))]


def rss_mb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Service:
    """A fresh database, a storage root, an API process and worker processes."""

    def __init__(self, name, workers=1, concurrency=1, engine="tesseract", claim="table-lock", listen=True, extra=None):
        # LECTOR_BENCH_DB_SUFFIX keeps two checkouts that share one cluster out of each other's databases.
        self.database = f"lector_bench_{name}{os.environ.get('LECTOR_BENCH_DB_SUFFIX', '')}"
        ensure_pg()
        psql("postgres", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        psql("postgres", f"CREATE DATABASE {self.database}")
        self.storage = tempfile.mkdtemp(prefix=f"lector-bench-{name}-", dir=os.environ.get("LECTOR_BENCH_STORAGE_DIR"))
        self.env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{PG_PORT}/{self.database}",
                        LECTOR_STORAGE_ROOT=self.storage, LECTOR_HTTP_PORT=str(HTTP_PORT), LECTOR_LOG_LEVEL="error",
                        LECTOR_ENGINE=engine, LECTOR_CLAIM=claim, LECTOR_WORKER_LISTEN="true" if listen else "false",
                        LECTOR_WORKER_CONCURRENCY=str(concurrency), LECTOR_RATE_LIMIT="1000000",
                        LECTOR_RATE_BURST="1000000", LECTOR_DATABASE_POOL_SIZE="20", OMP_THREAD_LIMIT="1", **(extra or {}))
        subprocess.run([LECTOR, "migrate", "--directory", os.path.join(ROOT, "db")], env=self.env, check=True, capture_output=True)
        self.key = subprocess.run([LECTOR, "keys", "create", "--user", "bench"], env=self.env, check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.api = subprocess.Popen([LECTOR, "serve"], env=self.env, stderr=subprocess.DEVNULL)
        self.workers = []
        self._connections = __import__("threading").local()
        self.base = f"http://127.0.0.1:{HTTP_PORT}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{self.base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(workers):
            self.start_worker()

    def start_worker(self, log=None):
        """A worker process; with `log` (a file), at log level info with its stderr there (one line per job)."""
        env = dict(self.env, LECTOR_LOG_LEVEL="info") if log else self.env
        self.workers.append(subprocess.Popen([LECTOR, "work"], env=env, stderr=log or subprocess.DEVNULL))

    def submit(self, data, query=""):
        """Submits a document; returns the job's id. One kept-alive connection per calling thread, as an HTTP
        client library or `lector submit` keeps: a connection per job cost the API and this client CPU that the
        measured side paid for on a 2-core machine."""
        import http.client
        import json
        # reuse=false: rounds repeat the same documents, and every one must be read (not reused).
        query = (query + "&" if query else "?") + "reuse=false"
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/octet-stream"}
        for attempt in range(2):
            connection = getattr(self._connections, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=60)
                self._connections.connection = connection
            try:
                connection.request("POST", f"/v1/jobs{query}", body=data, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError):
                # The server closed a kept-alive connection (idle timeout, a restart): once more on a new one.
                connection.close()
                self._connections.connection = None
                if attempt:
                    raise
                continue
            if response.status != 202:
                raise RuntimeError(f"submit answered {response.status}: {body[:200]!r}")
            return json.loads(body)["id"]

    UNFINISHED = "SELECT count(*) FROM jobs WHERE status IS DISTINCT FROM 'FINISHED' AND status IS DISTINCT FROM 'FAILURE'"

    def unfinished(self):
        return int(psql(self.database, self.UNFINISHED))

    def wait_all(self, timeout=3600):
        deadline = time.time() + timeout
        # Polls twice a second through one psql session: a psql process (and a database backend) per poll cost
        # CPU on a 2-core machine that the measured side paid for; the figures come from the database's
        # timestamps, not from when the poll noticed.
        session = subprocess.Popen([PG, "psql", "-d", self.database, "-tA"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, bufsize=1)
        try:
            while time.time() < deadline:
                session.stdin.write(self.UNFINISHED + ";\n")
                session.stdin.flush()
                if int(session.stdout.readline()) == 0:
                    break
                time.sleep(0.5)
        finally:
            session.stdin.close()
            session.wait()

    def span(self):
        """Seconds from the first job's creation to the last FINISHED transition, and the job count."""
        row = psql(self.database, """SELECT extract(epoch FROM max(t.at) - min(j.created_at)), count(DISTINCT j.id)
                                     FROM jobs j JOIN job_transitions t ON t.job_id = j.id AND t.status = 'FINISHED'""")
        seconds, count = row.split("|")
        return float(seconds), int(count)

    def drain_span(self):
        """Seconds from the first claim to the last FINISHED transition, and the job count (the workers alone)."""
        row = psql(self.database, """SELECT extract(epoch FROM max(t.at) FILTER (WHERE t.status = 'FINISHED')
                                                      - min(t.at) FILTER (WHERE t.status = 'IN_PROGRESS')),
                                            count(*) FILTER (WHERE t.status = 'FINISHED')
                                     FROM job_transitions t""")
        seconds, count = row.split("|")
        return float(seconds), int(count)

    def stop(self, remove=True):
        """Stops the processes; with `remove` (the default) also drops the database and the storage folder, else
        `remove()` does later."""
        for process in [self.api, *self.workers]:
            process.send_signal(signal.SIGTERM)
        for process in [self.api, *self.workers]:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if remove:
            self.remove()

    def remove(self):
        psql("postgres", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        shutil.rmtree(self.storage, ignore_errors=True)


def process_cpu(pid):
    """CPU seconds (user + system) a process has used so far, or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def postgres_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


class CPUMeter:
    """CPU seconds used by the API, the workers and PostgreSQL between start() and stop() (/proc/PID/stat)."""

    def __init__(self, svc):
        self.svc = svc

    def snapshot(self):
        return {"api": {self.svc.api.pid: process_cpu(self.svc.api.pid)},
                "workers": {w.pid: process_cpu(w.pid) for w in self.svc.workers},
                "postgres": {pid: process_cpu(pid) for pid in postgres_pids()}}

    def start(self):
        self.before = self.snapshot()

    def stop(self):
        after = self.snapshot()
        return {part: sum(seconds - self.before[part].get(pid, 0.0) for pid, seconds in pids.items())
                for part, pids in after.items()}


def receipts(count):
    files = sorted(os.path.join(DATA, f) for f in os.listdir(DATA) if f.endswith(".jpg"))
    return files[:count]


def tiny_png():
    path = os.path.join(tempfile.mkdtemp(), "tiny.png")
    subprocess.run(["/usr/bin/convert", "-size", "32x16", "xc:white", "-depth", "8", path], check=True)
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- P1
STAGES = ["claim", "read", "slot", "decode", "preprocess", "preview", "classify", "recognize", "scene", "hocr", "pdf", "engine", "return", "encode", "stage", "end"]


def stage_times(log_path):
    """Per-job stage times (seconds) from a worker's `job attempt ended ... stages=read=… decode=…` log lines."""
    import re
    jobs = []
    with open(log_path, errors="replace") as f:
        for line in f:
            if "job attempt ended" in line and "stages=" in line:
                job = {m.group(1): float(m.group(2)) for m in re.finditer(r"\b(%s)=([0-9.]+)" % "|".join(STAGES), line)}
                # The attempt's own seconds, plus the claim that came before it: the slot's whole cost per job.
                job["_total"] = float(re.search(r"\bseconds=([0-9.]+)", line).group(1)) + job.get("claim", 0.0)
                cpu = re.search(r"\bengine_cpu=([0-9.]+)", line)
                if cpu:  # workers from before it was logged have none
                    job["_cpu"] = float(cpu.group(1))
                jobs.append(job)
    return jobs


def p1(args):
    """(a) the tesseract CLI writes the text (stdout, discarded); (b) the engine loop keeps each result in memory;
    (c) the service writes result.json and result.txt (fsynced) and records FINISHED. With --formats
    json,txt,hocr,pdf all three also make hOCR and the searchable PDF (the CLI into a scratch folder)."""
    files = receipts(args.files)
    documents = []
    for path in files:
        with open(path, "rb") as f:
            documents.append(f.read())
    formats = args.formats.split(",")
    extra = [f for f in formats if f in ("hocr", "pdf")]
    scratch = tempfile.mkdtemp(prefix="lector-bench-p1-")
    cli, engine, service, jobs, cpu, engine_cpu, engine_stages, engine_thread_cpu = [], [], [], [], [], [], [], []
    services = []
    try:
        for round_ in range(args.rounds):
            log(f"p1 round {round_ + 1}: tesseract CLI, 2 at a time ({'txt ' + ' '.join(extra) if extra else 'txt to stdout'})")
            started = time.time()
            if extra:
                pairs = "\n".join(f"{path}\n{os.path.join(scratch, str(i))}" for i, path in enumerate(files))
                subprocess.run(["xargs", "-P", "2", "-n", "2", "sh", "-c", f'tesseract "$0" "$1" txt {" ".join(extra)}'], input=pairs, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_THREAD_LIMIT="1"), check=True)
            else:
                subprocess.run(["xargs", "-P", "2", "-I{}", "tesseract", "{}", "-"], input="\n".join(files), text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_THREAD_LIMIT="1"), check=True)
            cli.append(len(files) / (time.time() - started))
            log(f"p1 round {round_ + 1}: the engine in a loop, 2 slots, formats {args.formats}")
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run([BENCH, "engine", "--concurrency", "2", "--formats", args.formats, *files], capture_output=True,
                                 text=True, check=True, env=dict(os.environ, OMP_THREAD_LIMIT="1")).stdout
            engine.append(float(out.split("docs_per_s=")[1].split()[0]))
            if "engine_cpu_per_document=" in out:
                engine_thread_cpu.append(float(out.split("engine_cpu_per_document=")[1].split()[0]))
            if "stages_per_document=" in out:  # binaries from before it was printed have none
                engine_stages.append({k: float(v) for k, v in (kv.split("=") for kv in out.split("stages_per_document=")[1].split())})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            engine_cpu.append((after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / len(files))
            log(f"p1 round {round_ + 1}: the service, HTTP submit, 1 worker with 2 slots, formats {args.formats}")
            # A database and storage folder per round, all removed after the last round: removing a round's
            # thousand-odd files just before the next round is measured made every file the next round created cost
            # more (ext4 without a journal, as on this machine, skips inodes freed in the last minute, up to six, one by one when it
            # allocates: `recently_deleted`), a cost of the harness's clean-up, not of the service (BENCHMARKS.md, P1).
            svc = Service(f"p1_{round_ + 1}", workers=0, concurrency=2)
            services.append(svc)
            worker_log = os.path.join(svc.storage, "worker.log")
            with open(worker_log, "w") as log_file:
                svc.start_worker(log=log_file)
            time.sleep(1)  # the worker loads its engines and the default language's model at start; leave it a moment
            query = f"?formats={','.join(formats)}" if extra else ""
            meter = CPUMeter(svc)
            meter.start()
            for document in documents:
                svc.submit(document, query)
            svc.wait_all()
            used = meter.stop()
            seconds, count = svc.span()
            service.append(count / seconds)
            cpu.append({part: used[part] / count for part in used})
            jobs += stage_times(worker_log)
            svc.stop(remove=False)
    finally:
        # Also after a failed round: the live service is stopped (stopping twice is harmless), and every round's
        # database and folder (copies of the receipts) go.
        for svc in services:
            svc.stop(remove=False)
            svc.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"P1 files={len(files)} rounds={args.rounds} formats={args.formats} documents/s")
    print(f"  (a) tesseract CLI, 2 at a time: {stats(cli, '%.2f')}")
    print(f"  (b) engine loop, 2 slots:       {stats(engine, '%.2f')}")
    print(f"  (c) service, HTTP, 2 slots:     {stats(service, '%.2f')}")
    # Three decimals: the goals (1.3, 0.95) are read against these, and 0.949 is not 0.95.
    print(f"  median ratios: (c)/(a) = {statistics.median(service) / statistics.median(cli):.3f}  "
          f"(c)/(b) = {statistics.median(service) / statistics.median(engine):.3f}")
    if cpu:
        print(f"  (b) CPU per document (ms, median of rounds, warm-up included): {statistics.median(engine_cpu) * 1000:.0f}")
        print("  (c) CPU per job (ms, median of rounds): " + "  ".join(
            f"{part} {statistics.median(c[part] for c in cpu) * 1000:.0f}" for part in ("workers", "api", "postgres")))
    if engine_thread_cpu and any("_cpu" in j for j in jobs):
        # The same engine call, timed by its own thread's CPU clock: equal figures mean the service's slots do the
        # engine's work at the engine's cost, and the rest of (c)'s time goes to the work around it.
        service_cpu = statistics.mean(j["_cpu"] for j in jobs if "_cpu" in j)
        print(f"  engine thread CPU per document (ms, CLOCK_THREAD_CPUTIME_ID): (b) {statistics.mean(engine_thread_cpu) * 1000:.1f}  "
              f"(c) {service_cpu * 1000:.1f}")
    if jobs:
        total = statistics.mean(j["_total"] for j in jobs)
        print(f"  (c) per job, {len(jobs)} jobs, worker's stages (mean ms, share of the slot's {total * 1000:.0f} ms per job, claim included):")
        print(f"    {'':11} {'(c)':>8}     {'share':>5}   {'(b), engine loop':>16}")
        for stage in STAGES:
            values = [j.get(stage, 0.0) for j in jobs]
            if any(values):
                mean = statistics.mean(values)
                loop = statistics.mean(s.get(stage, 0.0) for s in engine_stages) if engine_stages else 0.0
                beside = f"{loop * 1000:8.1f} ms" if loop else ""
                print(f"    {stage:11} {mean * 1000:8.1f} ms  {100 * mean / total:5.1f}%  {beside}")
        rest = total - sum(statistics.mean(j.get(s, 0.0) for j in jobs) for s in STAGES)
        print(f"    {'other':11} {rest * 1000:8.1f} ms  {100 * rest / total:5.1f}%  (the rest of the worker's steps: options, logging, lease table)")


# ---------------------------------------------------------------- PAGES
def jpeg_pdf(images, path, dpi=300):
    """A PDF with one JPEG per page, embedded as it is (DCTDecode), each page sized for `dpi` (so that Lector's
    rasteriser, at 300 dpi, gives back the image's own pixels). Written here: ImageMagick's policy forbids PDFs."""
    def jpeg_size(data):
        i = 2
        while i < len(data):
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big"), data[i + 9]
            i += 2 + length
        raise ValueError("no JPEG frame header")
    objects = []  # bytes of objects 1...n
    def add(body):
        objects.append(body)
        return len(objects)
    catalog = add(b"")  # filled in below
    pages = add(b"")
    kids = []
    for image in images:
        with open(image, "rb") as f:
            data = f.read()
        width, height, components = jpeg_size(data)
        colour = b"/DeviceGray" if components == 1 else b"/DeviceRGB"
        xobject = add(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s /BitsPerComponent 8 "
                      b"/Filter /DCTDecode /Length %d >>\nstream\n" % (width, height, colour, len(data)) + data + b"\nendstream")
        w, h = width * 72.0 / dpi, height * 72.0 / dpi
        content = b"q %.3f 0 0 %.3f 0 0 cm /Im0 Do Q" % (w, h)
        stream = add(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.3f %.3f] /Resources << /XObject << /Im0 %d 0 R >> >> "
                        b"/Contents %d 0 R >>" % (pages, w, h, xobject, stream)))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages
    objects[pages - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog, xref)
    with open(path, "wb") as f:
        f.write(out)


def latencies(svc):
    """(content type, seconds from creation to FINISHED) of every finished job, and how many ended otherwise."""
    rows = psql(svc.database, """SELECT j.content_type, extract(epoch FROM t.at - j.created_at)
                                 FROM jobs j JOIN job_transitions t ON t.job_id = j.id AND t.status = 'FINISHED'""")
    failed = int(psql(svc.database, "SELECT count(*) FROM jobs WHERE status = 'FAILURE'"))
    return [(line.split("|")[0], float(line.split("|")[1])) for line in rows.splitlines() if line], failed


def pages(args):
    """Page tasks (issue 17): (A) one long PDF's latency with 1 worker x 1 slot against 2 x 1, and 2 x 1 reading
    documents whole (LECTOR_PAGE_TASKS=0), alternated in each round; (B) a mixed load on 2 x 1: long PDFs among
    one-page receipts arriving at a steady rate, the receipts' latency with and without page tasks."""
    files = receipts(39)
    scratch = tempfile.mkdtemp(prefix="lector-bench-pages-")
    long_pdf = os.path.join(scratch, "long.pdf")
    jpeg_pdf([files[i % len(files)] for i in range(args.pages)], long_pdf)
    with open(long_pdf, "rb") as f:
        long_bytes = f.read()
    variants = [("1 worker x 1 slot, page tasks", 1, {}), ("2 workers x 1 slot, page tasks", 2, {}),
                ("2 workers x 1 slot, whole documents", 2, {"LECTOR_PAGE_TASKS": "0"})]
    seconds = {name: [] for name, _, _ in variants}
    for round_ in range(args.rounds if "A" in args.parts else 0):
        for name, workers, extra in variants:
            log(f"pages A round {round_ + 1}: {args.pages}-page PDF, {name}")
            svc = Service("pages", workers=workers, concurrency=1, extra=extra)
            time.sleep(1)
            svc.submit(long_bytes)
            svc.wait_all()
            finished, failed = latencies(svc)
            svc.stop()
            if failed or not finished:
                raise SystemExit(f"the PDF did not finish ({name})")
            seconds[name].append(finished[0][1])
    if "A" in args.parts:
        pages_a(args, long_bytes, variants, seconds)
    if "B" in args.parts:
        pages_b(args, files, scratch)
    shutil.rmtree(scratch, ignore_errors=True)


def pages_a(args, long_bytes, variants, seconds):
    print(f"PAGES A: one {args.pages}-page PDF ({len(long_bytes) // 1024} KiB, receipts at 300 dpi), seconds from submit to FINISHED")
    for name, _, _ in variants:
        print(f"  {name:38} {stats(seconds[name], '%.2f')}")
    one, two = statistics.median(seconds[variants[0][0]]), statistics.median(seconds[variants[1][0]])
    whole = statistics.median(seconds[variants[2][0]])
    print(f"  latency ratio 1x1 / 2x1 with page tasks: {one / two:.2f} (goal >= 1.8); 2x1 whole / 2x1 pages: {whole / two:.2f}")


def pages_b(args, files, scratch):
    mixed_pdf = os.path.join(scratch, "mixed.pdf")
    jpeg_pdf([files[(i * 7) % len(files)] for i in range(args.mixed_pages)], mixed_pdf)
    with open(mixed_pdf, "rb") as f:
        mixed_bytes = f.read()
    singles = [open(files[i % len(files)], "rb").read() for i in range(args.singles)]
    results = {}
    for name, extra in [("page tasks", {}), ("whole documents", {"LECTOR_PAGE_TASKS": "0"})]:
        log(f"pages B: {args.long} x {args.mixed_pages}-page PDFs among {args.singles} receipts, one every {args.interval} s, 2 x 1, {name}")
        svc = Service("pages", workers=2, concurrency=1, extra=extra)
        time.sleep(1)
        started = time.time()
        pdf_times = [i * args.pdf_every for i in range(args.long)]
        for index, single in enumerate(singles):
            at = index * args.interval
            while pdf_times and pdf_times[0] <= at:
                pdf_times.pop(0)
                svc.submit(mixed_bytes)
            delay = started + at - time.time()
            if delay > 0:
                time.sleep(delay)
            svc.submit(single)
        for _ in pdf_times:
            svc.submit(mixed_bytes)
        svc.wait_all()
        finished, failed = latencies(svc)
        svc.stop()
        one_page = [s for t, s in finished if t != "application/pdf"]
        long_docs = [s for t, s in finished if t == "application/pdf"]
        results[name] = (one_page, long_docs, failed)
    print(f"PAGES B: {args.long} x {args.mixed_pages}-page PDFs (one every {args.pdf_every} s) among {args.singles} one-page receipts "
          f"(one every {args.interval} s), 2 workers x 1 slot; seconds from submit to FINISHED")
    for name, (one_page, long_docs, failed) in results.items():
        print(f"  {name:16} receipts p50 {quantile(one_page, 0.5):6.2f}  p95 {quantile(one_page, 0.95):6.2f}  max {max(one_page):6.2f}   "
              f"PDFs {' '.join('%.1f' % s for s in sorted(long_docs))}   failed {failed}")


# ---------------------------------------------------------------- S3
WEED = os.path.join(ROOT, "deploy", "scripts", "weed.sh")


def s3(args):
    """The P1 service measure, once with job folders on local files and once on the private SeaweedFS
    (LECTOR_STORAGE=s3://…, deploy/scripts/weed.sh), in alternating order round by round (files, s3, s3, files,
    ...) so that the machine's drift hits both; each submit is timed by the client (one at a time, as P1)."""
    sys.path.insert(0, os.path.join(ROOT, "Tests", "storage"))
    from s3_e2e import Store
    state = subprocess.run([WEED, "start"], check=True, capture_output=True, text=True).stdout.strip()
    env = {}
    for line in subprocess.run([WEED, "env"], check=True, capture_output=True, text=True).stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    store = Store(env)
    time.sleep(3)  # let the store settle (its start-up costs CPU) before the first round
    files = receipts(args.files)
    documents = []
    for path in files:
        with open(path, "rb") as f:
            documents.append(f.read())
    throughput = {"files": [], "s3": []}
    latency = {"files": [], "s3": []}
    cpu = {"files": [], "s3": []}   # per round: CPU seconds per document of api, worker, postgres, store
    with open(os.path.join(os.environ.get("LECTOR_WEED_DIR", os.path.join(ROOT, ".weed")), "weed.pid")) as f:
        weed_pid = int(f.read())
    services, spools, prefixes = [], [], []
    try:
        for round_ in range(args.rounds):
            for backend in (("files", "s3") if round_ % 2 == 0 else ("s3", "files")):
                log(f"s3 round {round_ + 1}: {backend}, {len(documents)} receipts, 1 worker with 2 slots")
                prefix = f"bench-{os.urandom(6).hex()}"
                spool = tempfile.mkdtemp(prefix="lector-bench-spool-")
                extra = {} if backend == "files" else {
                    "LECTOR_STORAGE": f"s3://{store.bucket}/{prefix}", "LECTOR_SPOOL_DIR": spool,
                    **{k: v for k, v in env.items() if k.startswith("LECTOR_S3_")}}
                # A database and folder per round, removed after the last: as in P1, removing a round's files just
                # before the next round made that round's file creations cost more (ext4 without a journal).
                svc = Service(f"s3_{backend}_{round_ + 1}", workers=1, concurrency=2, extra=extra)
                services.append(svc)
                time.sleep(1)  # the worker loads its engines on start; leave it idle a moment (as P1)
                meter = CPUMeter(svc)
                meter.start()
                weed_before = process_cpu(weed_pid)
                for data in documents:
                    started = time.perf_counter()
                    svc.submit(data)
                    latency[backend].append(time.perf_counter() - started)
                svc.wait_all()
                seconds, count = svc.span()
                throughput[backend].append(count / seconds)
                used = meter.stop()
                used["store"] = process_cpu(weed_pid) - weed_before  # the store idles during files rounds
                cpu[backend].append({part: value / count for part, value in used.items()})
                svc.stop(remove=False)
                spools.append(spool)
                if backend == "s3":
                    prefixes.append(prefix)
    finally:
        for svc in services:
            svc.stop(remove=False)
            svc.remove()
        for spool in spools:
            shutil.rmtree(spool, ignore_errors=True)
        for prefix in prefixes:
            store.delete_prefix(prefix + "/")
        if state == "started":
            subprocess.run([WEED, "stop"], check=False)
    print(f"S3 receipts={len(documents)} rounds={args.rounds} (API + 1 worker with 2 slots; order alternates)")
    for backend in ("files", "s3"):
        ms = [v * 1000 for v in latency[backend]]
        print(f"  {backend:5} documents/s: {stats(throughput[backend], '%.2f')}   "
              f"submit ms: p50 {quantile(ms, 0.5):.1f}  p99 {quantile(ms, 0.99):.1f}  max {max(ms):.1f} (n={len(ms)})")
    for backend in ("files", "s3"):
        parts = ("api", "workers", "postgres", "store")
        print(f"  {backend:5} CPU s per document (median of rounds): " + "  ".join(
            f"{part} {statistics.median(r[part] for r in cpu[backend]):.3f}" for part in parts)
            + f"  total {statistics.median(sum(r[p] for p in parts) for r in cpu[backend]):.3f}")
    pairs = [s / f for f, s in zip(throughput["files"], throughput["s3"])]
    print(f"  s3/files throughput, per round: {' '.join(f'{r:.2f}' for r in pairs)}; median of the round ratios "
          f"{statistics.median(pairs):.2f}; ratio of medians "
          f"{statistics.median(throughput['s3']) / statistics.median(throughput['files']):.2f}")
    print(f"  s3/files submit p50: {quantile(latency['s3'], 0.5) / quantile(latency['files'], 0.5):.2f}  "
          f"p99: {quantile(latency['s3'], 0.99) / quantile(latency['files'], 0.99):.2f}")


# ---------------------------------------------------------------- P6
SCENES = os.environ.get("LECTOR_BENCH_SCENES", os.path.join(ROOT, "..", "shared", "data", "scene-icdar2015", "images"))
VENV_PYTHON = os.path.join(ROOT, ".venv-bench", "bin", "python")


def p6(args):
    """Seconds per photo of the scene pipeline, both sides loading the same DB model once per run and reading
    every region with Tesseract in single-line mode; rounds alternate the two so that noise hits both."""
    if not os.path.exists(VENV_PYTHON):
        print("P6 skipped: no .venv-bench (run deploy/scripts/deps.sh bench && benchmarks/setup-bench-venv.sh)")
        return
    photos = sorted(os.path.join(SCENES, f) for f in os.listdir(SCENES) if f.endswith(".jpg"))[:args.photos]
    lector, python = [], []
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    for round_ in range(args.rounds):
        out = tempfile.mkdtemp()
        log(f"p6 round {round_ + 1}: lector ocr --mode scene, {len(photos)} photos")
        started = time.time()
        subprocess.run([LECTOR, "ocr", "--mode", "scene", "--format", "json", "--output", out, *photos], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lector.append((time.time() - started) / len(photos))
        log(f"p6 round {round_ + 1}: python (OpenCV DNN + pytesseract), {len(photos)} photos")
        started = time.time()
        subprocess.run([VENV_PYTHON, os.path.join(ROOT, "benchmarks", "scene_python.py"), "--output", out, *photos],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        python.append((time.time() - started) / len(photos))
        shutil.rmtree(out, ignore_errors=True)
    print(f"P6 photos={len(photos)} rounds={args.rounds} seconds per photo (process start and model load included)")
    print(f"  lector ocr --mode scene:          {stats(lector)}")
    print(f"  python OpenCV DNN + pytesseract:  {stats(python)}")
    print(f"  median ratio python/lector = {statistics.median(python) / statistics.median(lector):.2f}x")


# ---------------------------------------------------------------- P2
def p2(args):
    print("P2 claim latency (ms), one claimer, one job at a time")
    for history in args.history:
        database = "lector_bench_p2"
        ensure_pg()
        psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql("postgres", f"CREATE DATABASE {database}")
        out = subprocess.run([BENCH, "claims", "--history", str(history), "--claims", str(args.claims),
                              "--migrations", os.path.join(ROOT, "db")],
                             env=dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{PG_PORT}/{database}"),
                             capture_output=True, text=True, check=True).stdout.strip()
        print("  " + out)
        psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# ---------------------------------------------------------------- FLEET
def fleet(args):
    """A large fleet, simulated: --processes lector-bench processes with --slots slots in all claim and end (no
    OCR, no files) until a backlog of --jobs is gone, for each claim strategy in turn, against one PostgreSQL."""
    per_process = args.slots // args.processes
    print(f"FLEET {args.processes} processes x {per_process} slots, {args.jobs} jobs from {args.owners} owners, no-op jobs")
    print(f"  {'strategy':12} {'claims/s':>9} {'claim p50 ms':>13} {'p99 ms':>9}   lock waits (share of active backends sampled)")
    database = f"lector_bench_fleet{os.environ.get('LECTOR_BENCH_DB_SUFFIX', '')}"
    url = f"postgres://lector@127.0.0.1:{PG_PORT}/{database}"
    ensure_pg()
    for round_ in range(args.rounds):
        for strategy in args.strategies:
            psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            psql("postgres", f"CREATE DATABASE {database}")
            env = dict(os.environ, LECTOR_DATABASE_URL=url)
            subprocess.run([LECTOR, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True, capture_output=True)
            psql(database, f"INSERT INTO users (name) SELECT 'owner-' || g FROM generate_series(1, {args.owners}) g")
            psql(database, f"""
                INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, created_at)
                SELECT gen_random_uuid(), u.id, 'p.png', 'image/png', 1, decode(repeat('00', 32), 'hex'), 'QUEUED',
                       now() - interval '1 hour' + g * interval '1 millisecond'
                FROM generate_series(1, {args.jobs}) g JOIN users u ON u.name = 'owner-' || (1 + g % {args.owners})""")
            psql(database, "SET session_replication_role = replica; "
                 "INSERT INTO job_transitions (job_id, status, at) SELECT id, 'QUEUED', created_at FROM jobs")
            psql(database, "VACUUM ANALYZE")
            folder = tempfile.mkdtemp(prefix="lector-fleet-")
            start_at = time.time() + 3 + 0.05 * per_process
            processes = []
            for index in range(args.processes):
                command = [BENCH, "fleet", "--slots", str(per_process), "--strategy", strategy, "--batch", str(args.batch),
                           "--latencies", os.path.join(folder, f"{index}.txt"), "--start-at", f"{start_at:.3f}"]
                if index == 0:
                    command.append("--sample")
                processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
            outputs = [process.communicate()[0].strip() for process in processes]
            if any(process.returncode != 0 for process in processes):
                raise SystemExit(f"fleet: a process failed: {outputs}")
            latencies = []
            for index in range(args.processes):
                with open(os.path.join(folder, f"{index}.txt")) as f:
                    latencies += [float(line) for line in f if line.strip()]
            shutil.rmtree(folder, ignore_errors=True)
            seconds = max(float(out.split("seconds=")[1].split()[0]) for out in outputs)
            claims = sum(int(out.split("claims=")[1].split()[0]) for out in outputs)
            in_progress = int(psql(database, "SELECT count(*) FROM job_transitions WHERE status = 'IN_PROGRESS'"))
            finished = int(psql(database, "SELECT count(*) FROM jobs WHERE status = 'FINISHED'"))
            if not (claims == in_progress == finished == args.jobs):
                raise SystemExit(f"fleet: {claims} claims, {in_progress} IN_PROGRESS, {finished} FINISHED for {args.jobs} jobs")
            sampled = outputs[0].split("waits=")[1] if "waits=" in outputs[0] else ""
            counts = dict(item.split("=") for item in sampled.split(",") if "=" in item)
            active = sum(int(v) for v in counts.values()) or 1
            lock = {k: int(v) for k, v in counts.items() if k.startswith("Lock:")}
            locks = ", ".join(f"{k[5:]} {100 * v / active:.0f}%" for k, v in sorted(lock.items(), key=lambda kv: -kv[1])) or "none"
            print(f"  {strategy:12} {claims / seconds:9.0f} {quantile(latencies, 0.5):13.2f} {quantile(latencies, 0.99):9.2f}"
                  f"   {locks} (all locks {100 * sum(lock.values()) / active:.0f}%; round {round_ + 1})", flush=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# ---------------------------------------------------------------- P3
def wrk_submit(svc, seconds, body_path):
    script = os.path.join(svc.storage, "post.lua")
    with open(script, "w") as f:
        f.write('local f = io.open("%s", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\n'
                'wrk.headers["Authorization"] = "Bearer %s"\nwrk.headers["Content-Type"] = "image/png"\n'
                % (body_path, svc.key))
    out = subprocess.run(["wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "-s", script, f"{svc.base}/v1/jobs?reuse=false"],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split("Requests/sec:")[1].split()[0])


def p3(args):
    body = os.path.join(tempfile.mkdtemp(), "tiny.png")
    with open(body, "wb") as f:
        f.write(tiny_png())
    print(f"P3 queue throughput, no-op engine, {args.concurrency} slot(s) per worker, wrk submits for {args.seconds} s (jobs/s)")
    for claim in args.claims:
        for workers in args.workers:
            svc = Service(f"p3", workers=workers, concurrency=args.concurrency, engine="noop", claim=claim)
            submitted = wrk_submit(svc, args.seconds, body)
            svc.wait_all()
            seconds, count = svc.span()
            svc.stop()
            print(f"  claim={claim:11} workers={workers}: submit {submitted:7.0f}/s   submit→FINISHED {count / seconds:7.0f}/s  ({count} jobs)")
    # The two halves apart: submits with no worker running, then workers draining that backlog with no API load.
    print("P3 stages apart (table lock): HTTP submit alone, then the workers alone draining the backlog")
    # CPU per job (ms) of each process kind, from /proc: a cost that the machine's noise hardly moves.
    for workers in args.workers:
        svc = Service("p3", workers=0, concurrency=args.concurrency, engine="noop")
        meter = CPUMeter(svc)
        meter.start()
        submitted = wrk_submit(svc, args.seconds, body)
        submit_cpu = meter.stop()
        submitted_jobs = int(psql(svc.database, "SELECT count(*) FROM jobs"))
        for _ in range(workers):
            svc.start_worker()
        meter.start()
        svc.wait_all()
        drain_cpu = meter.stop()
        seconds, count = svc.drain_span()
        svc.stop()
        per_job = lambda cpu, jobs: " ".join(f"{part} {cpu[part] * 1000 / max(jobs, 1):.2f}" for part in ("api", "postgres", "workers"))
        print(f"  workers={workers}: submit alone {submitted:7.0f}/s   drain alone {count / seconds:7.0f}/s  ({count} jobs)"
              f"   CPU ms/job: submit [{per_job(submit_cpu, submitted_jobs)}]  drain [{per_job(drain_cpu, count)}]")


# ---------------------------------------------------------------- P4
def p4(args):
    png = tiny_png()
    print("P4 wake-up latency on an idle system: QUEUED → IN_PROGRESS (ms), database timestamps")
    for listen in (True, False):
        svc = Service("p4", workers=1, engine="noop", listen=listen)
        time.sleep(1.5)
        ids = []
        for _ in range(args.jobs):
            ids.append(svc.submit(png))
            time.sleep(0.25 if listen else 0.6)
        svc.wait_all()
        rows = psql(svc.database, """SELECT extract(epoch FROM i.at - q.at) * 1000 FROM job_transitions q
                                     JOIN job_transitions i ON i.job_id = q.job_id AND i.status = 'IN_PROGRESS'
                                     WHERE q.status = 'QUEUED'""").split()
        latencies = [float(x) for x in rows]
        svc.stop()
        mode = "NOTIFY " if listen else "polling"
        print(f"  {mode}: n={len(latencies)} p50={quantile(latencies, .5):.1f} p99={quantile(latencies, .99):.1f} max={max(latencies):.1f}")


# ---------------------------------------------------------------- P5
async def waiter(host, port, job, key, results):
    path = f"/v1/jobs/{job}/result?wait=60"
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    await writer.drain()
    results["connected"] += 1
    status = await reader.readline()
    results["answers"].append((time.time(), status.split()[1].decode(), job))
    writer.close()


async def p5_async(svc, ids, waiters):
    results = {"connected": 0, "answers": []}
    tasks = [asyncio.create_task(waiter("127.0.0.1", HTTP_PORT, ids[i % len(ids)], svc.key, results))
             for i in range(waiters)]
    while results["connected"] < waiters:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)
    rss_waiting = rss_mb(svc.api.pid)
    svc.start_worker()
    await asyncio.gather(*tasks)
    return results, rss_waiting


def p5(args):
    png = tiny_png()
    svc = Service("p5", workers=0, engine="noop", extra={"LECTOR_LONG_POLL_MAX": "60"})
    ids = [svc.submit(png) for _ in range(args.jobs)]
    rss_idle = rss_mb(svc.api.pid)
    results, rss_waiting = asyncio.run(p5_async(svc, ids, args.waiters))
    finished = dict(line.split("|") for line in psql(
        svc.database, "SELECT job_id, extract(epoch FROM at) FROM job_transitions WHERE status = 'FINISHED'").splitlines())
    peak = rss_mb(svc.api.pid, "VmHWM")
    codes = {}
    delays = []
    for answered, status, job in results["answers"]:
        codes[status] = codes.get(status, 0) + 1
        delays.append((answered - float(finished[job])) * 1000)
    svc.stop()
    print(f"P5 long poll: waiters={args.waiters} on {args.jobs} jobs, one API process")
    print(f"  API RSS: idle {rss_idle:.0f} MB, {args.waiters} waiting {rss_waiting:.0f} MB, peak {peak:.0f} MB")
    print(f"  statuses: {codes}")
    print(f"  answer delay after the FINISHED of its job (ms): p50={quantile(delays, .5):.0f} p99={quantile(delays, .99):.0f} "
          f"max={max(delays):.0f} (each waiter: its answer minus its job's FINISHED time)")


# ---------------------------------------------------------------- P7
def p7(args):
    png = tiny_png()
    print("P7 worker memory (RSS, MB)")
    for kind, count in (("noop", args.noop), ("real", args.real)):
        svc = Service("p7", workers=1, concurrency=2 if kind == "real" else 1, engine="noop" if kind == "noop" else "tesseract")
        worker = svc.workers[0].pid
        samples = []
        documents = [png] if kind == "noop" else [open(p, "rb").read() for p in receipts(39)]
        for index in range(count):
            svc.submit(documents[index % len(documents)])
            if index % max(1, count // 50) == 0:
                samples.append(rss_mb(worker))
        while svc.unfinished():
            samples.append(rss_mb(worker))
            time.sleep(0.2)
        samples.append(rss_mb(worker))
        svc.stop()
        tenth = max(1, len(samples) // 10)
        deciles = " ".join(f"{samples[min(len(samples) - 1, i * len(samples) // 10)]:.0f}" for i in range(11))
        print(f"  {kind}: jobs={count} samples={len(samples)} after warm-up (first 10%) min={min(samples[tenth:]):.0f} "
              f"max={max(samples[tenth:]):.0f} last={samples[-1]:.0f}; first sample {samples[0]:.0f}; by tenths: {deciles}")


def adversarial_upload(base, key, size, boundary="lectorbench", pattern=True, chunk=65536, pause=0.0):
    """Sends one multipart upload of `size` document bytes over a raw socket and returns (status, seconds).
    With `pattern`, the document is made of near-delimiters (CRLF--, the boundary's prefix), the bytes that made
    the old parser slow; `pause` spreads the body over time (a slow client)."""
    import socket
    unit = (b"\r\n--" + boundary.encode()[:-1] + b"\r\r\n-") if pattern else b"x" * 64
    document = (unit * (size // len(unit) + 1))[:size]
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"a.png\"\r\n\r\n").encode()
    body = head + b"\x89PNG\r\n\x1a\n" + document + f"\r\n--{boundary}--\r\n".encode()
    host, port = base.replace("http://", "").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=300) as sock:
        sock.sendall((f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
                      f"Connection: close\r\n\r\n").encode())
        try:
            for offset in range(0, len(body), chunk):
                sock.sendall(body[offset:offset + chunk])
                if pause:
                    time.sleep(pause)
        except OSError:
            pass
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, time.monotonic() - started


def healthz_latencies(base, stop, out):
    while not stop.is_set():
        started = time.monotonic()
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=120).read()
        except OSError:
            pass
        out.append(time.monotonic() - started)
        time.sleep(0.05)


def h1(args):
    """Hostile uploads: /healthz latency while adversarial 20 MB multipart uploads run, and the API's peak RSS
    with many concurrent 45 MB uploads."""
    import threading
    svc = Service("h1", workers=0, extra={"LECTOR_MAX_UPLOAD_BYTES": "50000000"})
    try:
        for uploads in args.uploads:
            stop, latencies, results = threading.Event(), [], []
            probe = threading.Thread(target=healthz_latencies, args=(svc.base, stop, latencies))
            probe.start()
            threads = [threading.Thread(target=lambda: results.append(adversarial_upload(svc.base, svc.key, 20_000_000)))
                       for _ in range(uploads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stop.set()
            probe.join()
            statuses = sorted({status for status, _ in results})
            print(f"H1 {uploads} adversarial 20 MB uploads: statuses {statuses}, upload seconds {stats([s for _, s in results], '%.2f')}; "
                  f"/healthz p50 {quantile(latencies, 0.5) * 1000:.1f} ms  p99 {quantile(latencies, 0.99) * 1000:.1f} ms  "
                  f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} probes", flush=True)
        before = rss_mb(svc.api.pid)
        results = []
        threads = [threading.Thread(target=lambda: results.append(adversarial_upload(svc.base, svc.key, 45_000_000, pattern=False, pause=0.002)))
                   for _ in range(args.concurrent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"H1 {args.concurrent} concurrent 45 MB uploads: statuses {sorted({s for s, _ in results})}; API RSS before "
              f"{before:.0f} MB, peak {rss_mb(svc.api.pid, 'VmHWM'):.0f} MB", flush=True)
    finally:
        svc.stop()


def h2(args):
    """Trickling clients: how long half-sent heads and bodies at a few bytes a second stay open, while a normal
    client is served."""
    import socket, threading
    svc = Service("h2", workers=0)
    try:
        host, port = "127.0.0.1", HTTP_PORT
        closed_after = []

        def trickle(head_only):
            started = time.monotonic()
            with socket.create_connection((host, port), timeout=700) as sock:
                sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" if head_only else
                             (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.key}\r\n"
                              f"Content-Type: image/png\r\nContent-Length: 1000000\r\n\r\n").encode())
                sock.settimeout(1)
                while time.monotonic() - started < args.limit:
                    try:
                        sock.sendall(b"x")
                        if sock.recv(1, socket.MSG_PEEK) == b"":
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break
            closed_after.append(time.monotonic() - started)

        threads = [threading.Thread(target=trickle, args=(i % 2 == 0,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(2)
        started = time.monotonic()
        urllib.request.urlopen(f"{svc.base}/healthz", timeout=30).read()
        served = time.monotonic() - started
        for t in threads:
            t.join()
        print(f"H2 {args.clients} trickling clients (half heads and 1 byte/s bodies): closed after "
              f"{stats(closed_after, '%.1f')} s; a normal request meanwhile answered in {served * 1000:.1f} ms", flush=True)
    finally:
        svc.stop()


def h3(args):
    """Worker memory per megapixel: peak RSS of `lector ocr` on one blank page of each size, per pipeline."""
    rows = []
    for megapixels in args.megapixels:
        side = int((megapixels * 1_000_000) ** 0.5)
        with tempfile.TemporaryDirectory() as folder:
            # A white 8-bit page with a dark bar (binary PGM: ImageMagick's resource policy refuses pages this big).
            path = os.path.join(folder, "page.pgm")
            with open(path, "wb") as f:
                f.write(f"P5 {side} {side} 255\n".encode())
                row_white, row_bar = b"\xff" * side, b"\xff" * 100 + b"\x20" * (side // 2) + b"\xff" * (side - 100 - side // 2)
                for y in range(side):
                    f.write(row_bar if 200 <= y < 260 else row_white)
            for mode in ["document", "scene"]:
                result = subprocess.run(["/usr/bin/time", "-f", "%M", LECTOR, "ocr", "--mode", mode, path],
                                        capture_output=True, text=True,
                                        env=dict(os.environ, LECTOR_MAX_PAGE_PIXELS=str(200_000_000), OMP_THREAD_LIMIT="1"))
                peak = int(result.stderr.strip().splitlines()[-1]) / 1024
                rows.append((megapixels, mode, peak))
                print(f"H3 {megapixels} MP page, {mode}: peak RSS {peak:.0f} MB ({peak / megapixels:.1f} MB per MP)", flush=True)
    return rows


def e1(args):
    """1,000 concurrent SSE subscribers (GET /v1/events, one user): the API's RSS, and the delay from each
    FINISHED transition's time in the database to its arrival at every subscriber."""
    import json as jsonlib
    svc = Service("e1", workers=1, engine="noop", extra={"LECTOR_MAX_UPLOADS_IN_FLIGHT": "64"})
    delays, connected = [], []

    async def subscriber(ready, stop):
        reader, writer = await asyncio.open_connection("127.0.0.1", HTTP_PORT)
        writer.write(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.key}\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        connected.append(1)
        ready.set() if len(connected) >= args.subscribers else None
        try:
            while not stop.is_set():
                line = await asyncio.wait_for(reader.readline(), timeout=60)
                if line.startswith(b"data: ") and b'"FINISHED"' in line:
                    at = jsonlib.loads(line[6:])["at"]
                    sent = __import__("datetime").datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
                    delays.append(time.time() - sent)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run():
        ready, stop = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(subscriber(ready, stop)) for _ in range(args.subscribers)]
        await asyncio.wait_for(ready.wait(), timeout=120)
        idle_rss = rss_mb(svc.api.pid)
        for _ in range(args.jobs):
            await asyncio.get_running_loop().run_in_executor(None, svc.submit, tiny_png())
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)
        peak = rss_mb(svc.api.pid, "VmHWM")
        stop.set()
        for task in tasks:
            task.cancel()
        return idle_rss, peak

    try:
        before = rss_mb(svc.api.pid)
        idle_rss, peak = asyncio.run(run())
        expected = args.subscribers * args.jobs
        print(f"E1 {args.subscribers} SSE subscribers, {args.jobs} jobs: API RSS {before:.0f} MB before, {idle_rss:.0f} MB "
              f"with the subscribers, peak {peak:.0f} MB; {len(delays)}/{expected} FINISHED events delivered; delay "
              f"p50 {quantile(delays, 0.5) * 1000:.0f} ms, p99 {quantile(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms",
              flush=True)
    finally:
        svc.stop()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="measure", required=True)
    a = sub.add_parser("p1"); a.add_argument("--files", type=int, default=39); a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--formats", default="json,txt", help="json,txt (default) or json,txt,hocr,pdf: every format, on every side")
    a = sub.add_parser("p2"); a.add_argument("--history", type=int, nargs="+", default=[1000, 1000000]); a.add_argument("--claims", type=int, default=1000)
    a = sub.add_parser("p3"); a.add_argument("--seconds", type=int, default=5)
    a.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    a.add_argument("--claims", nargs="*", default=["table-lock", "skip-locked"])
    a.add_argument("--concurrency", type=int, default=1, help="slots per worker process (LECTOR_WORKER_BATCH applies across them)")
    a = sub.add_parser("fleet"); a.add_argument("--slots", type=int, default=200); a.add_argument("--processes", type=int, default=4)
    a.add_argument("--jobs", type=int, default=20000); a.add_argument("--owners", type=int, default=20)
    a.add_argument("--batch", type=int, default=16); a.add_argument("--rounds", type=int, default=1)
    a.add_argument("--strategies", nargs="+", default=["table-lock", "batched", "skip-locked"])
    a = sub.add_parser("pages"); a.add_argument("--pages", type=int, default=24); a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--long", type=int, default=2); a.add_argument("--mixed-pages", type=int, default=50)
    a.add_argument("--pdf-every", type=float, default=30.0); a.add_argument("--singles", type=int, default=60)
    a.add_argument("--interval", type=float, default=1.2); a.add_argument("--parts", default="AB", help="A, B or AB")
    a = sub.add_parser("p4"); a.add_argument("--jobs", type=int, default=40)
    a = sub.add_parser("p5"); a.add_argument("--waiters", type=int, default=1000); a.add_argument("--jobs", type=int, default=10)
    a = sub.add_parser("p6"); a.add_argument("--photos", type=int, default=50); a.add_argument("--rounds", type=int, default=3)
    a = sub.add_parser("p7"); a.add_argument("--noop", type=int, default=10000); a.add_argument("--real", type=int, default=500)
    a = sub.add_parser("e1"); a.add_argument("--subscribers", type=int, default=1000); a.add_argument("--jobs", type=int, default=20)
    a = sub.add_parser("h1"); a.add_argument("--uploads", type=int, nargs="+", default=[2, 8]); a.add_argument("--concurrent", type=int, default=30)
    a = sub.add_parser("h2"); a.add_argument("--clients", type=int, default=50); a.add_argument("--limit", type=int, default=120)
    a = sub.add_parser("h3"); a.add_argument("--megapixels", type=int, nargs="+", default=[10, 30, 60])
    a = sub.add_parser("s3"); a.add_argument("--files", type=int, default=39); a.add_argument("--rounds", type=int, default=4)
    a = sub.add_parser("all"); a.add_argument("--small", action="store_true")
    args = parser.parse_args()
    log(f"binaries from {BIN_DIR}")
    if args.measure == "all":
        small = args.small
        p1(argparse.Namespace(files=8 if small else 39, rounds=1 if small else 3, formats="json,txt"))
        p2(argparse.Namespace(history=[1000, 20000] if small else [1000, 1000000], claims=200 if small else 1000))
        p3(argparse.Namespace(seconds=2 if small else 5, workers=[1, 2, 4], claims=["table-lock", "skip-locked"], concurrency=1))
        p4(argparse.Namespace(jobs=10 if small else 40))
        p5(argparse.Namespace(waiters=100 if small else 1000, jobs=10))
        p6(argparse.Namespace(photos=5 if small else 50, rounds=1 if small else 3))
        p7(argparse.Namespace(noop=300 if small else 10000, real=10 if small else 500))
    else:
        {"p1": p1, "p2": p2, "p3": p3, "fleet": fleet, "pages": pages, "p4": p4, "p5": p5, "p6": p6, "p7": p7, "h1": h1, "h2": h2, "h3": h3, "e1": e1, "s3": s3}[args.measure](args)


if __name__ == "__main__":
    main()
