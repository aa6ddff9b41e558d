#!/usr/bin/env python3
"""The bad-document corpus: hostile and broken files, generated here (nothing comes from elsewhere).

Each must be refused at submit with a 4xx naming the problem, or end in FAILURE with a reason a user
understands. Meanwhile the worker must not crash (same process from start to end) and its peak memory
(VmHWM) must stay under --memory-cap-mb.

    Tests/corpus/bad_documents.py [--memory-cap-mb 650]        (make corpus; part of make test)
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def bmp_declaring(width, height):
    header = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info


def tiff_with_pages(pages):
    """A little-endian TIFF of `pages` 1x1 bilevel pages."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index in range(pages):
        ifd_offset = len(out)
        entries = 8
        data_offset = ifd_offset + 2 + entries * 12 + 4
        next_ifd = 0 if index == pages - 1 else data_offset + 2  # data is 1 byte, padded to 2
        fields = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 1), (259, 3, 1, 1), (262, 3, 1, 0),
                  (273, 4, 1, data_offset), (278, 3, 1, 1), (279, 4, 1, 1)]
        out += struct.pack("<H", entries)
        for tag, kind, count, value in fields:
            out += struct.pack("<HHII", tag, kind, count, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, count, value, 0)
        out += struct.pack("<I", next_ifd)
        out += b"\xff\x00"
    return bytes(out)


def pgm_with_bar(width, height):
    """A dark 8-bit page with a light bar across it (binary PGM)."""
    dark, bar = b"\x10" * width, b"\x10" * 100 + b"\xe0" * (width // 2) + b"\x10" * (width - 100 - width // 2)
    rows = [bar if 300 <= y < 380 else dark for y in range(height)]
    return f"P5 {width} {height} 255\n".encode() + b"".join(rows)


def pdf(objects, trailer_extra=""):
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R {trailer_extra}>>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def pdf_with_pages(pages, size=(612, 792)):
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>",
               "<< /Length 0 >>\nstream\n\nendstream"]
    objects += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size[0]} {size[1]}] /Contents 3 0 R >>"] * pages
    return pdf(objects)


def chatty_pdf():
    """A few KB that make poppler report ~2 million syntax errors (unknown operators in a compressed stream):
    the worker must not buffer them."""
    import zlib
    content = zlib.compress(b"q " + b"zz " * 2_000_000 + b"Q", 9)
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
               f"<< /Length {len(content)} /Filter /FlateDecode >>\nstream\n" + content.decode("latin-1") + "\nendstream"]
    out = pdf([o for o in objects[:3]] + ["<<>>"])
    # pdf() writes text objects; rebuild with the binary stream in place of the placeholder.
    body = objects[3].encode("latin-1")
    return out.replace(b"4 0 obj\n<<>>\nendobj", b"4 0 obj\n" + body + b"\nendobj")


def encrypted_pdf():
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
               "<< /Filter /Standard /V 2 /R 3 /Length 128 /P -4 /O <" + "ab" * 32 + "> /U <" + "cd" * 32 + "> >>"]
    return pdf(objects, "/Encrypt 4 0 R /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>] ")


def render(path, text, fmt):
    subprocess.run(["/usr/bin/convert", "-size", "600x120", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "40",
                    "-fill", "black", "-annotate", "+20+70", text, "-depth", "8", f"{fmt}:{path}"], check=True)
    with open(path, "rb") as f:
        return f.read()


def corpus(directory):
    png = render(os.path.join(directory, "ok.png"), "Truncated", "png")
    jpeg = render(os.path.join(directory, "ok.jpg"), "Truncated", "jpeg")
    polyglot = (b"\x89PNG\r\n\x1a\n" + b"<html><script>alert(1)</script></html>"
                + b"PK\x03\x04" + b"\x00" * 26 + b"%PDF-1.4 trailing")
    # (name, bytes, what may happen, reason fragment expected when it fails)
    return [
        ("zero bytes", b"", {"400"}, None),
        ("truncated PNG", png[: len(png) * 6 // 10], {"FAILURE"}, "could not be decoded"),
        ("truncated JPEG", jpeg[: len(jpeg) // 2], {"FAILURE"}, "could not be decoded"),
        ("PNG declaring 100000 x 100000 pixels", png_declaring(100_000, 100_000), {"FAILURE"}, "over the limit"),
        ("BMP declaring 60000 x 60000 pixels", bmp_declaring(60_000, 60_000), {"FAILURE"}, "over the limit"),
        ("TIFF with 5000 pages", tiff_with_pages(5000), {"FAILURE"}, "more than"),
        ("PDF with 5000 pages", pdf_with_pages(5000), {"FAILURE"}, "more than"),
        ("PDF page of 200 x 200 inches", pdf_with_pages(1, (14400, 14400)), {"FAILURE"}, "over the limit"),
        ("encrypted PDF", encrypted_pdf(), {"FAILURE"}, "PDF"),
        ("PDF making poppler print 2M errors", chatty_pdf(), {"FINISHED", "FAILURE"}, None),
        ("malformed PDF", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R\n%%EOF garbage \x00\xff", {"FAILURE"}, "PDF"),
        ("text file named .png", b"this is plain text, not an image\n", {"415"}, None),  # sent as notes.png, image/png
        ("GIF", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00" * 20, {"415"}, None),
        ("polyglot PNG/HTML/ZIP/PDF", polyglot, {"FAILURE"}, "not a readable PNG"),
        # The worst page the default limit admits: 36 MP, dark with a light bar, so `auto` reads it as a scene
        # and the detector runs. The worker's peak must stay within the documented budget (the cap).
        ("dark 36 MP page at the pixel limit", pgm_with_bar(6000, 6000), {"FINISHED"}, None),
        ("TIFF of 200 tiny pages", tiff_with_pages(200), {"FINISHED"}, None),
    ]


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def vm_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-cap-mb", type=float, default=650)  # one slot's budget (docs/design/security.md)
    parser.add_argument("--port", type=int, default=int(os.environ.get("LECTOR_CORPUS_PORT", "18282")))
    parser.add_argument("--binary", default=os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector")))
    args = parser.parse_args()

    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    database = "lector_corpus"
    subprocess.run([PG, "start"], check=True, capture_output=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {database}")
    storage = tempfile.mkdtemp(prefix="lector-corpus-")
    env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{database}",
               LECTOR_STORAGE_ROOT=storage, LECTOR_HTTP_PORT=str(args.port), LECTOR_LOG_LEVEL="warning",
               LECTOR_WORKER_POLL_INTERVAL="0.2", OMP_THREAD_LIMIT="1")
    subprocess.run([args.binary, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True, capture_output=True)
    key = subprocess.run([args.binary, "keys", "create", "--user", "corpus"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    api = subprocess.Popen([args.binary, "serve"], env=env, stderr=open(os.path.join(storage, "api.log"), "wb"))
    worker = subprocess.Popen([args.binary, "work"], env=env, stderr=open(os.path.join(storage, "worker.log"), "wb"))
    base = f"http://127.0.0.1:{args.port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            break
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    # lector re-executes itself once with OMP_THREAD_LIMIT set; the pid stays the same.
    worker_pid = worker.pid

    problems = []
    rows = []
    try:
        run_corpus(base, key, database, storage, rows, problems)
    finally:
        alive = worker.poll() is None and api.poll() is None
        peak = vm_hwm_mb(worker_pid) if worker.poll() is None else float("nan")
        api.terminate()
        worker.terminate()
        api.wait(timeout=30)
        worker.wait(timeout=60)

    for name, outcome, reason in rows:
        print(f"corpus: {name:40} {outcome:8} {reason}")
    if not alive:
        problems.append("the worker or the API process died during the corpus")
    if not peak <= args.memory_cap_mb:
        problems.append(f"worker peak memory {peak:.0f} MB is over the cap of {args.memory_cap_mb:.0f} MB")
    print(f"corpus: documents={len(rows)} problems={len(problems)} worker_alive={alive} worker_peak_mb={peak:.0f} cap_mb={args.memory_cap_mb:.0f}")
    for problem in problems:
        print(f"corpus: PROBLEM {problem}", file=sys.stderr)
    if problems:
        print(f"corpus: logs in {storage}", file=sys.stderr)
        return 1
    shutil.rmtree(storage, ignore_errors=True)
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return 0


def run_corpus(base, key, database, storage, rows, problems):
    for name, data, allowed, fragment in corpus(storage):
        named = name.startswith("text file")
        url = f"{base}/v1/jobs" + ("?filename=notes.png" if named else "")
        req = urllib.request.Request(url, data=data, method="POST")
        req.add_header("Authorization", f"Bearer {key}")
        req.add_header("Content-Type", "image/png" if named else "application/octet-stream")
        try:
            # Generous: the 36 MB page is spooled and synced, on a shared 2-core machine.
            with urllib.request.urlopen(req, timeout=180) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
            problems.append(f"{name}: answered {status} with a body that is not JSON")
        if status != 202:
            outcome, reason = str(status), body.get("error", {}).get("message", "")
            if not (400 <= status < 500) or not reason:
                problems.append(f"{name}: answered {status} without a 4xx error body")
        else:
            job = body["id"]
            deadline = time.time() + 60
            state = None
            while time.time() < deadline:
                state = psql(database, f"SELECT status || '|' || coalesce((SELECT reason FROM job_transitions WHERE job_id = '{job}' ORDER BY id DESC LIMIT 1), '') FROM jobs WHERE id = '{job}'")
                if state.split("|")[0] in ("FINISHED", "FAILURE"):
                    break
                time.sleep(0.2)
            outcome, reason = (state or "|").split("|", 1)
        rows.append((name, outcome, reason))
        if outcome not in allowed:
            problems.append(f"{name}: {outcome} ({reason}), expected one of {sorted(allowed)}")
        elif outcome == "FAILURE" and (not reason or (fragment and fragment not in reason)):
            problems.append(f"{name}: FAILURE reason {reason!r} does not say {fragment!r}")



if __name__ == "__main__":
    sys.exit(main())
