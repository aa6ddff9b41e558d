#!/usr/bin/env python3
"""Byte-for-byte oracle check of S3Kit's SigV4 signer against botocore.

Generates signing cases, signs them with botocore and with the Swift `sigv4-cases` executable (cases
as JSON on its stdin), compares, and exits non-zero on any mismatch.

Which botocore classes: S3 signs with `S3SigV4Auth` (Authorization header) and `S3SigV4QueryAuth`
(presigned URLs). Both override `_normalize_url_path` to return the URL's path unchanged: S3 neither
normalises the path (`//`, `.` and `..` are part of keys) nor encodes it a second time. The generic
`SigV4Auth`/`SigV4QueryAuth` (every other AWS service) apply `quote(normalize_url_path(path),
safe='/~')` to the already-encoded path, i.e. normalise and double-encode (`%20` -> `%2520`); they are
NOT the right oracle for S3 and would disagree on any key with an escaped byte.

Usage: check_sigv4.py [path-to-sigv4-cases]   (default: .build/debug/sigv4-cases; run from the repository root)
"""

import datetime
import hashlib
import json
import subprocess
import sys
from unittest import mock
from urllib.parse import quote

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

EMPTY = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"

KEYS = [
    "simple.txt",
    "dir/sub/file.pdf",
    "with space/a  b.txt",
    "ünïcödé/日本語.png",
    "plus+sign+key.txt",
    "tilde~file~",
    "percent%20literal%.txt",
    "eq=and&amp;key.txt",
    "quote'\"(paren)!*@$,;:.txt",
    "a//double/./dot/../x",
    "emoji 😀.bin",
    "trailing/",
    "résumé 2024 (final).pdf",
]

QUERIES = [
    [],
    [("list-type", "2"), ("prefix", "dir/sub dir/"), ("max-keys", "10")],
    [("prefix", "a+b c~d%e=f&g"), ("delimiter", "/")],
    [("continuation-token", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")],
    [("b", "2"), ("a", "1"), ("A", "0"), ("a-b", "x"), ("a_b", "y"), ("a.b", "z"), ("ab", "w")],
    [("uploads", None)],
    [("versionId", "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo")],
    [("unicode", "ünï 日本"), ("empty", "")],
]

HEADER_SETS = [
    [],
    [("Content-Type", "text/plain; charset=utf-8")],
    [("Range", "bytes=0-1023")],
    [("x-amz-meta-author", "  Jane   Doe  "), ("X-Amz-Meta-Tag", "a,b"), ("Content-Type", "image/png")],
    [("X-Custom-Header", "Mixed   Case\tValue"), ("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
    [("x-amz-checksum-sha256", "47DEQpj8HBSa+/TWmW8LLyoqUQ4xCkqKO0KNQzg3k9M="), ("Content-Length", "0")],
    [("x-amz-copy-source", "/bucket/src%20key.txt"), ("x-amz-metadata-directive", "REPLACE")],
]

ENDPOINTS = [
    ("http://127.0.0.1:18433", "path"),
    ("https://s3.eu-west-1.amazonaws.com", "path"),
    ("https://s3.us-west-2.amazonaws.com:443", "path"),
    ("https://{bucket}.s3.us-west-2.amazonaws.com", "virtual"),
    ("http://{bucket}.localhost:9000", "virtual"),
]

TIMESTAMPS = [
    datetime.datetime(2026, 11, 29, 12, 0, 0),
    datetime.datetime(2024, 2, 29, 23, 59, 59),
    datetime.datetime(2000, 1, 1, 0, 0, 0),
    datetime.datetime(2013, 5, 24, 0, 0, 0),
    datetime.datetime(2099, 12, 31, 23, 59, 59),
]

BUCKET = "lector-bucket"
CREDS = [
    ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", None),
    ("s3kitaccess", "s3kitsecret0123456789", "eu-west-1", None),
    ("ASIATEMP", "tempsecret", "us-west-2", "FwoGZXIvYXdzEBYaDN+token/with=chars"),
]


def encode_query(pairs):
    parts = []
    for key, value in pairs:
        if value is None:
            parts.append(quote(key, safe="-_.~"))
        else:
            parts.append(quote(key, safe="-_.~") + "=" + quote(value, safe="-_.~"))
    return "&".join(parts)


def build_url(endpoint, style, key, query):
    path_key = quote(key, safe="/~")
    if style == "path":
        url = f"{endpoint}/{BUCKET}/{path_key}"
    else:
        url = endpoint.format(bucket=BUCKET) + "/" + path_key
    q = encode_query(query)
    return url + ("?" + q if q else "")


def make_cases():
    cases = []
    n = 0
    # Header-signed requests: cycle through keys, queries, headers, endpoints and payload kinds.
    payloads = [("empty", None), ("unsigned", None), ("body", b"hello, world\n"), ("body", "ünï".encode())]
    for i in range(40):
        key = KEYS[i % len(KEYS)]
        query = QUERIES[i % len(QUERIES)]
        headers = HEADER_SETS[i % len(HEADER_SETS)]
        endpoint, style = ENDPOINTS[i % len(ENDPOINTS)]
        kind, body = payloads[i % len(payloads)]
        creds = CREDS[i % len(CREDS)]
        method = ["GET", "PUT", "HEAD", "DELETE", "POST"][i % 5]
        n += 1
        cases.append(dict(
            id=f"sign-{n}", kind="sign", method=method, url=build_url(endpoint, style, key, query),
            headers=[list(h) for h in headers], payload=kind, body=body,
            ts=TIMESTAMPS[i % len(TIMESTAMPS)], creds=creds, raw_key=key))
    # Repeated keys (same key, values sorted) are legal in a signed request's query.
    for query in ([("a", "2"), ("a", "1"), ("a", "")], [("x-id", "b"), ("x-id", "a+b"), ("x", "z")]):
        n += 1
        cases.append(dict(
            id=f"sign-{n}", kind="sign", method="GET", url=build_url(*ENDPOINTS[0], "k", query), headers=[],
            payload="empty", body=None, ts=TIMESTAMPS[0], creds=CREDS[0], raw_key="k"))
    # Presigned URLs.
    dispositions = [
        'attachment; filename="report.pdf"',
        'attachment; filename="résumé 2024.pdf"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%202024.pdf',
        'inline; filename="a+b=c&d~e.txt"',
    ]
    for i in range(24):
        key = KEYS[i % len(KEYS)]
        endpoint, style = ENDPOINTS[i % len(ENDPOINTS)]
        creds = CREDS[i % len(CREDS)]
        if i % 3 == 0:
            method = "GET"
            query = [("response-content-disposition", dispositions[i % len(dispositions)]),
                     ("response-content-type", "application/pdf; charset=\"utf-8\"")]
            headers = []
        elif i % 3 == 1:
            method = "PUT"
            query = []
            headers = [("Content-Type", "image/png"), ("Content-Length", str(1000 + i))]
        else:
            method = ["GET", "HEAD", "DELETE"][i % 3]
            query = QUERIES[i % len(QUERIES)]
            query = [(k, v) for k, v in query]  # no repeated keys: botocore's presigner keeps one
            headers = HEADER_SETS[i % len(HEADER_SETS)]
        n += 1
        cases.append(dict(
            id=f"presign-{n}", kind="presign", method=method, url=build_url(endpoint, style, key, query),
            headers=[list(h) for h in headers], expires=[1, 60, 3600, 604800][i % 4],
            ts=TIMESTAMPS[i % len(TIMESTAMPS)], creds=creds, raw_key=key))
    return cases


def botocore_result(case):
    access, secret, region, token = case["creds"]
    credentials = Credentials(access, secret, token)
    headers = {}
    for name, value in case["headers"]:
        headers[name] = value
    request = AWSRequest(method=case["method"], url=case["url"], headers=headers, data=case.get("body"))
    with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: case["ts"]):
        if case["kind"] == "presign":
            S3SigV4QueryAuth(credentials, "s3", region, expires=case["expires"]).add_auth(request)
            return {"url": request.url}
        if case["payload"] == "unsigned":
            request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        S3SigV4Auth(credentials, "s3", region).add_auth(request)
    out = {
        "authorization": request.headers["Authorization"],
        "x-amz-date": request.headers["X-Amz-Date"],
        "x-amz-content-sha256": request.headers["X-Amz-Content-SHA256"],
    }
    if not any(n.lower() == "host" for n, _ in case["headers"]):
        out["host"] = _host_from_url(case["url"])
    if token:
        out["x-amz-security-token"] = request.headers["X-Amz-Security-Token"]
    return out


def generic_differs(case):
    """Whether botocore's generic (non-S3) SigV4Auth signs `case` differently from S3SigV4Auth."""
    access, secret, region, token = case["creds"]
    expected = botocore_result(case)
    request = AWSRequest(method=case["method"], url=case["url"], headers=dict(case["headers"]), data=case.get("body"))
    request.headers["X-Amz-Content-SHA256"] = expected["x-amz-content-sha256"]
    with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: case["ts"]):
        SigV4Auth(Credentials(access, secret, token), "s3", region).add_auth(request)
    return request.headers["Authorization"] != expected["authorization"]


def swift_input(case):
    access, secret, region, token = case["creds"]
    item = dict(
        id=case["id"], kind=case["kind"], method=case["method"], url=case["url"], headers=case["headers"],
        timestamp=case["ts"].replace(tzinfo=datetime.timezone.utc).timestamp(), access_key=access,
        secret_key=secret, region=region, raw_key=case["raw_key"])
    if token:
        item["session_token"] = token
    if case["kind"] == "presign":
        item["expires"] = case["expires"]
    else:
        item["payload_hash"] = {"empty": EMPTY, "unsigned": UNSIGNED}.get(
            case["payload"]) or hashlib.sha256(case["body"]).hexdigest()
    return item


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else ".build/debug/sigv4-cases"
    cases = make_cases()
    proc = subprocess.run([binary], input=json.dumps([swift_input(c) for c in cases]).encode(),
                          capture_output=True, check=True)
    swift = {r["id"]: r for r in json.loads(proc.stdout)}
    failures = 0
    for case in cases:
        expected = botocore_result(case)
        got = swift.get(case["id"], {})
        if case["kind"] == "presign":
            actual = {"url": got.get("url")}
        else:
            actual = got.get("headers") or {}
        key_ok = got.get("encoded_key") == quote(case["raw_key"], safe="/~")
        if actual != expected or not key_ok:
            failures += 1
            print(f"MISMATCH {case['id']} {case['method']} {case['url']}")
            print(f"  botocore: {json.dumps(expected, ensure_ascii=False)}")
            print(f"  swift:    {json.dumps(actual, ensure_ascii=False)}")
            if not key_ok:
                print(f"  key encoding: {got.get('encoded_key')!r} != {quote(case['raw_key'], safe='/~')!r}")
    signs = sum(1 for c in cases if c["kind"] == "sign")
    generic = sum(1 for c in cases if c["kind"] == "sign" and generic_differs(c))
    print(f"for contrast: the generic SigV4Auth (path normalised and encoded again) signs {generic} of the "
          f"{signs} header cases differently from S3SigV4Auth")
    print(f"{len(cases) - failures}/{len(cases)} cases match botocore "
          f"({signs} S3SigV4Auth header signatures, {len(cases) - signs} S3SigV4QueryAuth presigned URLs)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
