#!/usr/bin/env python3
"""End to end on object storage: the real API and worker processes with LECTOR_STORAGE=s3://..., against the
private SeaweedFS (`deploy/scripts/weed.sh`) and the private PostgreSQL cluster.

First with the store unreachable (an API and a worker pointed at a closed port): submit answers 503
storage_unavailable and creates nothing, /readyz says "not writable", and that worker leaves a queued job
alone. Then with the store: submits a rendered page, waits for FINISHED, follows the result route's 302 to the store's presigned URL and
checks the text, checks the objects of the job's prefix (no staged attempt left, no hOCR or PDF: the job listed no
`formats`, and those answer 404 format_unavailable), re-OCRs it with formats [pdf] (the PDF object, served by a
presigned GET; still no hOCR), checks that no job folder and no upload appeared on local disk, then deletes the
job and checks its prefix is gone.

Direct uploads (POST /v1/uploads): a presigned PUT with urllib, refused by the store (403) with another length or
content type; a submit before the PUT (409), with another user's id (404), a tampered id (404) and an expired one
(410, signed here with the bucket's shared key) refused; the job made from the upload finishes with the text and
the document's SHA-256 (a retry with its Idempotency-Key replays it), and the upload object is gone; an upload of
text is refused with 415 and creates nothing. Workers stream documents to a scratch folder under TMPDIR (a folder
of this run): nothing is left there after the jobs.

    eval "$(deploy/scripts/weed.sh env)"; Tests/storage/s3_e2e.py      (part of make test)

Standard library only: the store is listed with a small SigV4 signer of its own (a second, independent one).
"""
import argparse
import datetime
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")
WEED = os.path.join(ROOT, "deploy", "scripts", "weed.sh")
DATABASE = os.environ.get("LECTOR_S3_E2E_DATABASE", "lector_s3_e2e")


def store_env():
    """LECTOR_TEST_S3_* from the environment, else from `weed.sh env`."""
    env = {k: v for k, v in os.environ.items() if k.startswith("LECTOR_TEST_S3_")}
    if not env.get("LECTOR_TEST_S3_ENDPOINT"):
        out = subprocess.run([WEED, "env"], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name.startswith("LECTOR_TEST_S3_"):
                env[name] = value
    return env


class Store:
    """Just enough S3 (signed GET/DELETE, ListObjectsV2) to look at the bucket from outside Lector."""

    def __init__(self, env):
        self.endpoint = env["LECTOR_TEST_S3_ENDPOINT"].rstrip("/")
        self.host = urllib.parse.urlparse(self.endpoint).netloc
        self.bucket = env["LECTOR_TEST_S3_BUCKET"]
        self.access = env["LECTOR_TEST_S3_ACCESS_KEY"]
        self.secret = env["LECTOR_TEST_S3_SECRET_KEY"]
        self.region = env.get("LECTOR_TEST_S3_REGION", "us-east-1")

    def request(self, method, key="", query=None):
        path = "/" + urllib.parse.quote(self.bucket, safe="") + ("/" + urllib.parse.quote(key, safe="/~") if key else "")
        pairs = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in (query or {}).items())
        qs = "&".join(f"{k}={v}" for k, v in pairs)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        payload = hashlib.sha256(b"").hexdigest()
        headers = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, qs, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
        scope = f"{stamp[:8]}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key_ = ("AWS4" + self.secret).encode()
        for part in (stamp[:8], self.region, "s3", "aws4_request"):
            key_ = hmac.new(key_, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key_, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={self.access}/{scope}, SignedHeaders={signed}, Signature={signature}"
        del headers["host"]
        req = urllib.request.Request(self.endpoint + path + ("?" + qs if qs else ""), method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()

    def keys(self, prefix):
        keys, token = [], None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            _, body = self.request("GET", query=query)
            root = ET.fromstring(body)
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            keys += [c.find(f"{ns}Key").text for c in root.findall(f"{ns}Contents")]
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true" or not token:
                return keys

    def delete_prefix(self, prefix):
        for key in self.keys(prefix):
            self.request("DELETE", key)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def http(method, url, key=None, data=None, headers=None, follow=True):
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def wait_for(base, key, job, seconds=180):
    state, deadline = None, time.time() + seconds
    while time.time() < deadline:
        _, _, body = http("GET", f"{base}/v1/jobs/{job}", key)
        state = json.loads(body).get("status")
        if state in ("FINISHED", "FAILURE"):
            break
        time.sleep(0.3)
    return state


def error_code(body):
    try:
        return json.loads(body or b"{}").get("error", {}).get("code")
    except ValueError:
        return None


def direct_uploads(base, key, run, store, prefix, page, check):
    """POST /v1/uploads, a PUT straight to the store, POST /v1/jobs {"upload": id}."""
    as_json = {"Content-Type": "application/json"}
    jobs_before = psql(DATABASE, "SELECT count(*) FROM jobs")

    def create(content_type, size, who=key):
        status, _, body = http("POST", f"{base}/v1/uploads", who, json.dumps({"contentType": content_type, "size": size}).encode(), as_json)
        return status, json.loads(body or b"{}")

    def submit(upload_id, who=key, **extra):
        body = dict({"upload": upload_id}, **extra)
        status, _, answer = http("POST", f"{base}/v1/jobs", who, json.dumps(body).encode(), as_json)
        return status, answer

    status, upload = create("image/png", len(page))
    check(status == 201 and upload.get("method") == "PUT" and upload.get("url", "").startswith(f"{store.endpoint}/{store.bucket}/{prefix}/.direct-uploads/")
          and upload.get("headers") == {"Content-Type": "image/png", "Content-Length": str(len(page))} and "expiresAt" in upload,
          f"POST /v1/uploads answers 201 with a presigned PUT under .direct-uploads/ ({status} {str(upload)[:160]})")
    upload_id, url = upload.get("id", ""), upload.get("url", "")
    object_key = urllib.parse.unquote(urllib.parse.urlparse(url).path.split(f"/{store.bucket}/", 1)[-1])

    status, _, _ = http("PUT", url, data=page + b"extra", headers={"Content-Type": "image/png"})
    check(status == 403, f"a PUT of another length is refused by the store ({status})")
    status, _, _ = http("PUT", url, data=page, headers={"Content-Type": "image/jpeg"})
    check(status == 403, f"a PUT of another content type is refused by the store ({status})")
    status, body = submit(upload_id)
    check(status == 409 and error_code(body) == "upload_not_received", f"a submit before the PUT: {status} {error_code(body)}")

    status, _, _ = http("PUT", url, data=page, headers=upload["headers"] if "headers" in upload else {})
    check(status == 200 and object_key in store.keys(f"{prefix}/.direct-uploads/"),
          f"the PUT with the signed headers is stored, and listed for the sweeper ({status} {object_key})")

    other = run("keys", "create", "--user", "s3-e2e-other")
    status, body = submit(upload_id, who=other)
    check(status == 404 and error_code(body) == "upload_not_found", f"another user's upload id is refused: {status} {error_code(body)}")
    parts = upload_id.split(".")
    tampered = ".".join(parts[:2] + [str(int(parts[2]) + 1)] + parts[3:]) if len(parts) == 5 else "x"
    status, body = submit(tampered)
    check(status == 404 and error_code(body) == "upload_not_found", f"a tampered upload id is refused: {status} {error_code(body)}")
    # An id signed right (with the bucket's shared key, as the API does) but long expired.
    _, signing_key = store.request("GET", f"{prefix}/.signing-key")
    owner = psql(DATABASE, "SELECT id FROM users WHERE name = 's3-e2e'")
    expires = int(time.time()) - 3 * 3600
    message = f"{owner}\n{parts[0]}\n{expires}\n{len(page)}\npng"
    mac = hmac.new(signing_key, ("lector-upload-v1\n" + message).encode(), hashlib.sha256).hexdigest()
    status, body = submit(f"{parts[0]}.{expires}.{len(page)}.png.{mac}")
    check(status == 410 and error_code(body) == "upload_expired", f"an expired upload id is refused: {status} {error_code(body)}")
    check(psql(DATABASE, "SELECT count(*) FROM jobs") == jobs_before, "...and none of these made a job")

    # Written by hand: the metadata's number has more digits than a float, and must be stored as sent.
    # reuse: false, so that a worker reads the uploaded document (the same page finished before).
    raw = '{"upload": %s, "options": {"lang": "eng", "reuse": false}, "metadata": {"n": 1.000000000000000000001}, "filename": "scan.png"}' % json.dumps(upload_id)
    idempotent = dict(as_json, **{"Idempotency-Key": f"upload-{upload_id[:36]}"})
    status, _, body = http("POST", f"{base}/v1/jobs", key, raw.encode(), idempotent)
    job = json.loads(body).get("id") if status == 202 else None
    check(status == 202 and job, f"POST /v1/jobs with the upload id answers 202 ({status} {body[:160]!r})")
    if not job:
        return
    # A retry with the same Idempotency-Key gets the same job, though the upload is gone by now.
    status, headers, body = http("POST", f"{base}/v1/jobs", key, raw.encode(), idempotent)
    check(status == 202 and json.loads(body or b"{}").get("id") == job and headers.get("Idempotent-Replayed") == "true",
          f"a retried submit with its Idempotency-Key replays the job ({status} {body[:80]!r})")
    try:
        head = store.request("HEAD", object_key)[0]
    except urllib.error.HTTPError as error:
        head = error.code
    check(head == 404 and object_key not in store.keys(f"{prefix}/.direct-uploads/"),
          f"the upload object is gone once the job exists (HEAD {head})")
    keys = store.keys(f"{prefix}/{job}/")
    check({f"{prefix}/{job}/document.png", f"{prefix}/{job}/metadata.json"} <= set(keys), f"the job's document and metadata.json: {keys}")
    row = psql(DATABASE, f"SELECT encode(sha256, 'hex') || ' ' || size_bytes || ' ' || document_name || ' ' || metadata::text FROM jobs WHERE id = '{job}'")
    check(row.startswith(f"{hashlib.sha256(page).hexdigest()} {len(page)} scan.png ") and "1.000000000000000000001" in row,
          f"the row records the document's SHA-256, size, name and the metadata exactly: {row}")
    state = wait_for(base, key, job)
    check(state == "FINISHED", f"the job from the upload ended {state}")
    status, _, text = http("GET", f"{base}/v1/jobs/{job}/result?format=txt", key)
    check(status == 200 and "storage" in text.decode("utf-8", "replace").lower(), f"its text: {status} {text[:80]!r}")
    status, body = submit(upload_id)
    check(status == 409 and error_code(body) == "upload_not_received", f"the upload id again, once used: {status} {error_code(body)}")

    # Text uploaded as a PNG: the store takes it, the submit does not (415), and nothing is created.
    jobs_before = psql(DATABASE, "SELECT count(*) FROM jobs")
    prefixes_before = {k.split("/")[1] for k in store.keys(f"{prefix}/") if not k.split("/")[1].startswith(".")}
    text_document = b"this is plain text, not a picture\n"
    status, upload = create("image/png", len(text_document))
    status, _, _ = http("PUT", upload.get("url", ""), data=text_document, headers=upload.get("headers", {}))
    check(status == 200, f"the store takes the text upload ({status})")
    status, body = submit(upload.get("id", ""))
    check(status == 415 and error_code(body) == "unsupported_document_type", f"a text upload is refused: {status} {error_code(body)}")
    prefixes_after = {k.split("/")[1] for k in store.keys(f"{prefix}/") if not k.split("/")[1].startswith(".")}
    check(psql(DATABASE, "SELECT count(*) FROM jobs") == jobs_before and prefixes_after == prefixes_before,
          "...and creates no job and no job prefix")

    status, body = create("text/plain", 10)
    check(status == 415, f"an upload of an unsupported type is refused at once ({status})")
    status, body = create("image/png", 10**12)
    check(status == 413, f"an upload larger than LECTOR_MAX_UPLOAD_BYTES is refused at once ({status})")


def batches(base, key, store, prefix, page, source_job, check):
    """POST /v1/batches from two direct uploads of a page that finished before: both jobs reuse its results
    (copied on the store), the uploads go, the batch ends at once, and its archive holds both texts."""
    as_json = {"Content-Type": "application/json"}
    ids = []
    for _ in range(2):
        status, _, body = http("POST", f"{base}/v1/uploads", key, json.dumps({"contentType": "image/png", "size": len(page)}).encode(), as_json)
        upload = json.loads(body or b"{}")
        status, _, _ = http("PUT", upload.get("url", ""), data=page, headers=upload.get("headers", {}))
        check(status == 200, f"batch upload PUT ({status})")
        ids.append(upload.get("id", ""))
    body = {"uploads": [ids[0], {"upload": ids[1], "filename": "second.png"}], "options": {"lang": "eng"}, "metadata": {"batch": 1}}
    status, headers, answer = http("POST", f"{base}/v1/batches", key, json.dumps(body).encode(), as_json)
    created = json.loads(answer or b"{}")
    jobs = created.get("jobs", [])
    check(status == 202 and len(jobs) == 2 and headers.get("Location") == f"/v1/batches/{created.get('id')}",
          f"POST /v1/batches from two uploads answers 202 with two jobs ({status} {answer[:160]!r})")
    check(all(j.get("reusedFrom") for j in jobs) and all(j.get("status") == "FINISHED" for j in jobs),
          f"both reuse the finished job's results: {[(j.get('status'), j.get('reusedFrom')) for j in jobs]}")
    left = [k for k in store.keys(f"{prefix}/.direct-uploads/") if k.rsplit("/", 1)[-1] in {i.split(".")[0] for i in ids}]
    check(left == [], f"the batch's uploads are gone once its jobs exist: {left}")
    for job in jobs:
        keys = set(store.keys(f"{prefix}/{job['id']}/"))
        check({f"{prefix}/{job['id']}/{name}" for name in ("document.png", "metadata.json", "result.json", "result.txt")} <= keys,
              f"a reused job's prefix holds its document and its own copy of the results: {sorted(keys)}")
    status, _, answer = http("GET", f"{base}/v1/batches/{created.get('id')}?wait=30", key)
    view = json.loads(answer or b"{}")
    check(status == 200 and view.get("status") == "ENDED" and view.get("counts", {}).get("FINISHED") == 2,
          f"the batch has ended: {view.get('status')} {view.get('counts')}")
    status, headers, _ = http("GET", f"{base}/v1/batches/{created.get('id')}/archive", key, follow=False)
    status2, headers2, data = http("GET", f"{base}{headers.get('Location', '/')}")
    names = {}
    if status2 == 200:
        import io, zipfile
        archive = zipfile.ZipFile(io.BytesIO(data))
        check(archive.testzip() is None, "the archive's CRCs are right")
        names = {name: archive.read(name).decode("utf-8", "replace") for name in archive.namelist()}
    check(status == 302 and status2 == 200 and headers2.get("Content-Type") == "application/zip"
          and "storage" in names.get("0002-second.png/result.txt", "").lower() and "manifest.json" in names,
          f"the archive through its signed link ({status} {status2}): {sorted(names)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("LECTOR_S3_E2E_PORT", "18383")))
    parser.add_argument("--binary", default=os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector")))
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    env_s3 = store_env()
    store = Store(env_s3)
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"

    # The private cluster (started by `make test`; started here when nothing answers).
    if subprocess.run([PG, "psql", "-d", "postgres", "-tAc", "SELECT 1"], capture_output=True).returncode != 0:
        subprocess.run([PG, "start"], check=True, capture_output=True)
    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    psql("postgres", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DATABASE}")

    scratch = tempfile.mkdtemp(prefix="lector-s3-e2e-")
    workdir = os.path.join(scratch, "cwd")           # each process's working directory: must stay empty
    spool = os.path.join(scratch, "spool")           # LECTOR_SPOOL_DIR
    files_root = os.path.join(scratch, "no-storage")  # LECTOR_STORAGE_ROOT: must never be created
    logs = os.path.join(scratch, "logs")
    tmp = os.path.join(scratch, "tmp")               # TMPDIR: the worker's scratch folders (a downloaded document)
    for d in (workdir, logs, tmp):
        os.makedirs(d)
    env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{DATABASE}",
               LECTOR_STORAGE=f"s3://{store.bucket}/{prefix}", LECTOR_S3_ENDPOINT=store.endpoint,
               LECTOR_S3_REGION=store.region, LECTOR_S3_ACCESS_KEY_ID=store.access,
               LECTOR_S3_SECRET_ACCESS_KEY=store.secret, LECTOR_S3_ADDRESSING="path", LECTOR_SPOOL_DIR=spool,
               LECTOR_STORAGE_ROOT=files_root, LECTOR_HTTP_PORT=str(args.port), LECTOR_LOG_LEVEL="notice",
               LECTOR_WORKER_POLL_INTERVAL="0.2", LECTOR_RESULT_LINK_TTL="60", OMP_THREAD_LIMIT="1", TMPDIR=tmp)
    env.pop("LECTOR_SIGNING_KEY", None)  # the shared key object in the bucket is part of what is tested
    run = lambda *a: subprocess.run([binary, *a], env=env, cwd=workdir, check=True, capture_output=True, text=True).stdout.strip()
    run("migrate", "--directory", os.path.join(ROOT, "db"))
    key = run("keys", "create", "--user", "s3-e2e")
    api = subprocess.Popen([binary, "serve"], env=env, cwd=workdir, stderr=open(os.path.join(logs, "api.log"), "wb"))
    # Processes whose store is unreachable (nothing listens on port 1): they must refuse work, not lose it.
    env_down = dict(env, LECTOR_S3_ENDPOINT="http://127.0.0.1:1", LECTOR_S3_TIMEOUT="1", LECTOR_S3_MAX_ATTEMPTS="1",
                    LECTOR_SIGNING_KEY="s3-e2e-key-for-the-api-whose-store-is-down", LECTOR_HTTP_PORT=str(args.port + 1))
    api_down = subprocess.Popen([binary, "serve"], env=env_down, cwd=workdir, stderr=open(os.path.join(logs, "api-down.log"), "wb"))
    worker_down = subprocess.Popen([binary, "work"], env=env_down, cwd=workdir, stderr=open(os.path.join(logs, "worker-down.log"), "wb"))
    worker = None
    base = f"http://127.0.0.1:{args.port}"
    base_down = f"http://127.0.0.1:{args.port + 1}"
    problems = []

    def check(ok, what):
        print(f"s3-e2e: {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            problems.append(what)
        return ok

    try:
        for url, process in ((base, api), (base_down, api_down)):
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=1)
                    break
                except (urllib.error.URLError, OSError):
                    if process.poll() is not None:
                        break
                    time.sleep(0.1)
        check(api.poll() is None, "the API started with s3:// storage")

        image = os.path.join(scratch, "page.png")
        subprocess.run(["convert", "-size", "900x160", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "48", "-fill",
                        "black", "-annotate", "+30+100", "Object storage works", image], check=True)
        with open(image, "rb") as f:
            page = f.read()

        # The store unreachable: submit answers 503 with a JSON error and creates nothing; /readyz says so.
        status, headers, body = http("POST", f"{base_down}/v1/jobs", key, page, {"Content-Type": "image/png"})
        error = json.loads(body or b"{}").get("error", {}) if headers.get("Content-Type", "").startswith("application/json") else {}
        check(status == 503 and error.get("code") == "storage_unavailable",
              f"submit with the store down answers 503 storage_unavailable ({status} {error.get('code')})")
        check(psql(DATABASE, "SELECT count(*) FROM jobs") == "0", "...and creates no job")
        status, _, body = http("GET", f"{base_down}/readyz")
        check(status == 503 and json.loads(body or b"{}").get("storage") == "not writable",
              f"/readyz with the store down: {status} {body[:120]!r}")

        status, _, body = http("POST", f"{base}/v1/jobs", key, page, {"Content-Type": "image/png"})
        check(status == 202, f"submit answered {status}")
        job = json.loads(body)["id"]
        # A worker whose store is unreachable does not claim (nor fail) the job: it stays QUEUED.
        time.sleep(3)
        state = psql(DATABASE, f"SELECT status FROM jobs WHERE id = '{job}'")
        check(state == "QUEUED" and worker_down.poll() is None,
              f"a worker whose store is down leaves the job queued ({state})")
        for process in (api_down, worker_down):
            process.terminate()
            process.wait(timeout=60)
        worker = subprocess.Popen([binary, "work"], env=env, cwd=workdir, stderr=open(os.path.join(logs, "worker.log"), "wb"))
        folder = f"{prefix}/{job}/"
        keys = store.keys(folder)
        check(f"{folder}document.png" in keys and f"{folder}metadata.json" in keys,
              f"document and metadata.json are in the store at submit: {keys}")

        state = None
        deadline = time.time() + 180
        while time.time() < deadline:
            _, _, body = http("GET", f"{base}/v1/jobs/{job}", key)
            state = json.loads(body).get("status")
            if state in ("FINISHED", "FAILURE"):
                break
            time.sleep(0.3)
        check(state == "FINISHED", f"the job ended {state}")

        status, headers, _ = http("GET", f"{base}/v1/jobs/{job}/result?format=txt", key, follow=False)
        location = headers.get("Location", "")
        check(status == 302 and location.startswith(f"{store.endpoint}/{store.bucket}/{folder}result.txt?")
              and "X-Amz-Signature=" in location and "X-Amz-Expires=60" in location,
              f"result?format=txt answers 302 to a presigned URL of the store ({status} {location[:100]}...)")
        status, headers, text = http("GET", location)
        check(status == 200 and headers.get("Content-Type") == "text/plain; charset=utf-8",
              f"the presigned URL serves text/plain ({status} {headers.get('Content-Type')})")
        check("storage" in text.decode("utf-8", "replace").lower(), f"the text was read: {text.decode('utf-8', 'replace').strip()!r}")
        check(f'filename="{job}-result.txt"' in headers.get("Content-Disposition", ""),
              f"a download name: {headers.get('Content-Disposition')}")
        tampered = location.replace("result.txt", "result.json", 1)
        status, _, _ = http("GET", tampered)
        check(status == 403, f"the same signature on another object is refused ({status})")

        status, headers, _ = http("GET", f"{base}/v1/jobs/{job}/result", key, follow=False)
        status2, headers2, body = http("GET", headers.get("Location", base))
        result = json.loads(body) if status2 == 200 else {}
        check(status == 302 and "storage" in result.get("text", "").lower(),
              f"result (json) through the store: {status} then {status2}, {headers2.get('Content-Type')}")

        status, headers, _ = http("GET", f"{base}/v1/jobs/{job}/pages/1?size=thumbnail", key, follow=False)
        if status == 302:
            status2, headers2, picture = http("GET", headers["Location"])
            check(status2 == 200 and headers2.get("Content-Type") == "image/jpeg" and picture[:2] == b"\xff\xd8",
                  f"the thumbnail through the store ({status2} {headers2.get('Content-Type')})")
        else:
            check(status == 404, f"pages/1 answers 302 or 404 page_unavailable ({status})")

        keys = store.keys(folder)
        check(not [k for k in keys if "/attempts/" in k], f"no staged attempt is left: {keys}")
        check({f"{folder}result.json", f"{folder}result.txt"} <= set(keys), "the results are live objects")

        # Formats: a job that listed none has no hOCR or PDF object, and says so; a re-OCR that lists the PDF
        # (the document copied inside the store) has it, behind a presigned GET.
        check(not {f"{folder}result.hocr", f"{folder}result.pdf"} & set(keys), f"no hocr or pdf object without formats: {keys}")
        for name in ("hocr", "pdf"):
            status, _, body = http("GET", f"{base}/v1/jobs/{job}/result?format={name}", key, follow=False)
            check(status == 404 and error_code(body) == "format_unavailable", f"result?format={name} of a default job: {status} {body[:120]!r}")
        status, _, body = http("POST", f"{base}/v1/jobs/{job}/rerun", key, data=json.dumps(
            {"options": {"mode": "document", "formats": ["pdf"]}}).encode(), headers={"Content-Type": "application/json"})
        rerun = json.loads(body).get("id") if status == 202 else None
        check(rerun is not None, f"a re-OCR with formats [pdf] answered {status}")
        if rerun:
            check(wait_for(base, key, rerun) == "FINISHED", "the re-OCR finished")
            status, headers, _ = http("GET", f"{base}/v1/jobs/{rerun}/result?format=pdf", key, follow=False)
            location = headers.get("Location", "")
            check(status == 302 and location.startswith(f"{store.endpoint}/{store.bucket}/{prefix}/{rerun}/result.pdf?"),
                  f"the re-OCR's pdf: 302 to the store ({status} {location[:100]})")
            status, headers, pdf = http("GET", location) if location else (0, {}, b"")
            check(status == 200 and pdf.startswith(b"%PDF-"), f"the presigned URL serves the PDF ({status} {pdf[:8]!r})")
            status, _, body = http("GET", f"{base}/v1/jobs/{rerun}/result?format=hocr", key, follow=False)
            check(status == 404 and error_code(body) == "format_unavailable", f"the re-OCR did not list hocr: {status}")
            rerun_keys = store.keys(f"{prefix}/{rerun}/")
            check(f"{prefix}/{rerun}/result.pdf" in rerun_keys and f"{prefix}/{rerun}/result.hocr" not in rerun_keys,
                  f"the re-OCR's objects: {rerun_keys}")
            status, _, _ = http("DELETE", f"{base}/v1/jobs/{rerun}", key)
            check(status == 204, f"the re-OCR deleted ({status})")
        check(f"{prefix}/.signing-key" in store.keys(prefix + "/."), "the shared signing key object was created")

        check(not os.path.exists(files_root), "LECTOR_STORAGE_ROOT was never created")
        check(os.listdir(workdir) == [], f"the working directory stayed empty: {os.listdir(workdir)}")
        leftovers = [n for n in (os.listdir(spool) if os.path.isdir(spool) else []) if n.endswith(".upload")]
        check(leftovers == [], f"no upload left in the spool folder: {leftovers}")
        check(os.listdir(tmp) == [], f"the worker's scratch folders (the downloaded document) are gone: {os.listdir(tmp)}")

        direct_uploads(base, key, run, store, prefix, page, check)
        check(os.listdir(tmp) == [], f"...and after the upload's job: {os.listdir(tmp)}")
        batches(base, key, store, prefix, page, job, check)

        status, _, _ = http("DELETE", f"{base}/v1/jobs/{job}", key)
        check(status == 204, f"delete answered {status}")
        check(store.keys(folder) == [], "the job's prefix is gone after delete")
        status, _, _ = http("GET", f"{base}/v1/jobs/{job}/result", key, follow=False)
        check(status == 410, f"the result route answers 410 after delete ({status})")
        check(api.poll() is None and worker.poll() is None, "API and worker ran to the end")
    finally:
        processes = [p for p in (api, worker, api_down, worker_down) if p is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        try:
            store.delete_prefix(prefix + "/")
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the verdict
            print(f"s3-e2e: could not clean the prefix: {error}", file=sys.stderr)

    print(f"s3-e2e: checks failed={len(problems)}")
    if problems:
        print(f"s3-e2e: logs in {logs}", file=sys.stderr)
        for name in sorted(os.listdir(logs)):
            with open(os.path.join(logs, name), "rb") as f:
                sys.stderr.write(f"--- {name} (tail)\n" + f.read()[-3000:].decode("utf-8", "replace"))
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
