#!/usr/bin/env python3
"""Claim latency, old claim_job (db/001..005) vs fair claim_job (…006), side by side in one run.

  nice -n 10 .venv/bin/python bench.py [--claims N] [--backlog N]
  nice -n 10 .venv/bin/python bench.py --old 9 --new 10     (any two schema versions: migrations through N)

Four scratch databases: {old,new} x {1k,1M} finished jobs (the 1M ones are copies of one template, 006 then
applied to the "new" copy). For each queue shape (1 owner, 50 owners, submitted interleaved), every database
gets the same backlog through create_job (timed too), then one client claims in a loop, one claim per database
in turn, each a prepared `SELECT ... FROM claim_job($1,$2,$3,$4)` like the application's; the claimed job is
ended with end_job (not timed). Latency is the client's round trip.
"""
import argparse
import statistics
import os
import subprocess
import time
import uuid

import psycopg
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

DSN = "host=127.0.0.1 port=54329 user=lector dbname={}"
SHA = b"\x00" * 32
HERE = os.path.dirname(os.path.abspath(__file__))


def admin(sql):
    with psycopg.connect(DSN.format("postgres"), autocommit=True) as c:
        c.execute(sql)


def psql_file(db, path):
    subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "54329", "-U", "lector",
                    "-d", db, "-f", path], check=True, stdout=subprocess.DEVNULL)


def load_history(db, n, owners):
    with psycopg.connect(DSN.format(db), autocommit=True) as c:
        c.execute("INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, %s) g", (owners,))
        c.execute("SET session_replication_role = replica")
        c.execute(f"""
            INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, attempts, created_at)
            SELECT gen_random_uuid(), 1 + g %% {owners}, 'old.png', 'image/png', 1, %s, 'FINISHED', 1,
                   now() - interval '30 days' + g * interval '1 millisecond'
            FROM generate_series(1, {n}) g""", (SHA,))
        c.execute("SET session_replication_role = DEFAULT")


def setup(history_small, history_big, owners, old=5, new=6):
    dbs = {}
    for h, label in [(history_small, "1k"), (history_big, "1m")]:
        base = f"fair_b_base_{label}"
        subprocess.run([f"{HERE}/mkdb.sh", base, str(old)], check=True)
        t = time.time()
        load_history(base, h, owners)
        print(f"history {h:,} loaded in {time.time() - t:.0f} s")
        for kind in ("old", "new"):
            db = f"fair_b_{kind}_{label}"
            admin(f'DROP DATABASE IF EXISTS "{db}"')
            admin(f'CREATE DATABASE "{db}" TEMPLATE "{base}"')
            if kind == "new":
                for name in sorted(os.listdir(os.path.join(ROOT, "db"))):
                    if name.endswith(".sql") and old < int(name[:3]) <= new:
                        t = time.time()
                        psql_file(db, os.path.join(ROOT, "db", name))
                        print(f"  {name} on {h:,} jobs: {time.time() - t:.2f} s")
            with psycopg.connect(DSN.format(db), autocommit=True) as c:
                c.execute("VACUUM ANALYZE")
            dbs[(kind, label)] = db
        admin(f'DROP DATABASE "{base}"')
    return dbs


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=3000)
    ap.add_argument("--backlog", type=int, default=4000)
    ap.add_argument("--owners", type=int, default=50)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--old", type=int, default=5, help="the old schema: migrations through this number")
    ap.add_argument("--new", type=int, default=6, help="the new schema: migrations through this number")
    args = ap.parse_args()
    if args.reuse:
        dbs = {(k, l): f"fair_b_{k}_{l}" for k in ("old", "new") for l in ("1k", "1m")}
    else:
        dbs = setup(1000, args.big, args.owners, args.old, args.new)
    conns = {key: psycopg.connect(DSN.format(db), autocommit=True) for key, db in dbs.items()}
    claim_sql = "SELECT job_id, attempt, content_type, options FROM claim_job(%s, %s, %s, %s)"
    create_sql = "SELECT create_job(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    end_sql = "SELECT end_job(%s, %s, %s, 'FINISHED', NULL)"
    results = []
    for nowners in (1, args.owners):
        for c in conns.values():  # leftovers of an interrupted run, untimed
            while (row := c.execute(claim_sql, ("bench", 60.0, None, False), prepare=True).fetchone()) is not None:
                c.execute(end_sql, (row[0], "bench", row[1]), prepare=True)
        # Backlog through create_job, databases in turn.
        sub = {key: [] for key in dbs}
        for i in range(args.backlog):
            owner = 1 + i % nowners
            for key, c in conns.items():
                t = time.perf_counter()
                c.execute(create_sql, (uuid.uuid4(), owner, "q.png", "image/png", 1, SHA, "{}", "{}", None, None), prepare=True)
                sub[key].append(time.perf_counter() - t)
        for c in conns.values():
            c.execute("ANALYZE jobs")
        lat = {key: [] for key in dbs}
        for i in range(args.claims):
            for key, c in conns.items():
                t = time.perf_counter()
                row = c.execute(claim_sql, ("bench", 60.0, None, False), prepare=True).fetchone()
                lat[key].append(time.perf_counter() - t)
                c.execute(end_sql, (row[0], "bench", row[1]), prepare=True)
        # Drain what is left, untimed.
        for c in conns.values():
            while (row := c.execute(claim_sql, ("bench", 60.0, None, False), prepare=True).fetchone()) is not None:
                c.execute(end_sql, (row[0], "bench", row[1]), prepare=True)
        for key in dbs:
            ms = [x * 1000 for x in lat[key]]
            sm = [x * 1000 for x in sub[key]]
            results.append((nowners, key, statistics.median(ms), pct(ms, 99), statistics.mean(ms),
                            statistics.median(sm), pct(sm, 99)))
    print()
    print("| history | owners queued | claim_job | claim p50 ms | claim p99 ms | claim mean ms | create_job p50 ms | create_job p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for nowners, (kind, label), p50, p99, mean, s50, s99 in sorted(results, key=lambda r: (r[1][1], r[0], r[1][0] != "old")):
        hist = "1,000" if label == "1k" else f"{args.big:,}"
        print(f"| {hist} | {nowners} | {kind} | {p50:.3f} | {p99:.3f} | {mean:.3f} | {s50:.3f} | {s99:.3f} |")
    for c in conns.values():
        c.close()


if __name__ == "__main__":
    main()
