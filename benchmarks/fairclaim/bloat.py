#!/usr/bin/env python3
"""What a claim reads after many claims with no vacuum in between (the dead index entries every claim leaves at
the head of jobs_queued_idx, and with 006 also of queue_owners_turn_idx and of the served owner's range).

  nice -n 10 .venv/bin/python bloat.py [claims]

Old and new schema, autovacuum off on both (the worst case between two autovacuum runs), 50 owners with a
backlog of claims+1000 jobs queued through the trigger; claims only (not ended), then the buffers of one claim
with auto_explain.
"""
import re
import os
import subprocess
import sys
import time

import psycopg
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

DSN = "host=127.0.0.1 port=54329 user=lector dbname={}"
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for kind in ("old", "new"):
        db = f"fair_bloat_{kind}"
        subprocess.run([f"{HERE}/mkdb.sh", db, kind], check=True)
        with psycopg.connect(DSN.format(db), autocommit=True) as c:
            c.execute("ALTER TABLE jobs SET (autovacuum_enabled = off)")
            if kind == "new":
                c.execute("ALTER TABLE queue_owners SET (autovacuum_enabled = off)")
            c.execute("INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 50) g")
            c.execute(f"""
                INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, created_at)
                SELECT gen_random_uuid(), 1 + g % 50, 'q.png', 'image/png', 1, decode(repeat('00', 32), 'hex'),
                       now() - interval '1 hour' + g * interval '1 millisecond'
                FROM generate_series(1, {n + 1000}) g""")
            c.execute("INSERT INTO job_transitions (job_id, status) SELECT id, 'QUEUED' FROM jobs ORDER BY created_at")
            c.execute("VACUUM ANALYZE")
            t = time.time()
            lat = []
            for _ in range(n):
                t1 = time.perf_counter()
                c.execute("SELECT job_id FROM claim_job('b', 60, NULL, false)", prepare=True).fetchone()
                lat.append(time.perf_counter() - t1)
            wall = time.time() - t
            notices = []
            c.add_notice_handler(lambda m: notices.append(m.message_primary))
            c.execute("LOAD 'auto_explain'")
            for k, v in [("log_min_duration", "0"), ("log_analyze", "on"), ("log_buffers", "on"),
                         ("log_nested_statements", "on"), ("log_level", "notice"), ("log_timing", "off")]:
                c.execute(f"SET auto_explain.{k} = {v}")
            c.execute("SELECT job_id FROM claim_job('b', 60, NULL, false)", prepare=True).fetchone()
            lines = []
            for p in notices:
                hits = re.findall(r"shared hit=(\d+)", p)
                first = p.split("\n")[1].replace("Query Text: ", "")[:70]
                if hits and int(hits[0]) > 8:
                    lines.append(f"    {int(hits[0]):6d}  {' '.join(first.split())}")

            first_k = sorted(lat[:1000])
            last_k = sorted(lat[-1000:])
            print(f"{kind}: {n} claims in {wall:.1f} s; p50 of the first 1000 {first_k[500]*1000:.3f} ms, "
                  f"of the last 1000 {last_k[500]*1000:.3f} ms; statements of the next claim over 8 buffers:")
            print("\n".join(lines))
            notices.clear()
            owner = c.execute("SELECT owner_id FROM jobs WHERE status = 'QUEUED' LIMIT 1").fetchone()[0]
            c.execute("SELECT create_job(gen_random_uuid(), %s, 'q.png', 'image/png', 1, decode(repeat('00', 32), 'hex'), "
                      "'{}', '{}', NULL, NULL)", (owner,))
            for p in notices:
                hits = re.findall(r"shared hit=(\d+)", p)
                first = p.split("\n")[1].replace("Query Text: ", "")[:70]
                if "queue_owners" in p or "create_job" in p:
                    print(f"    submit: {int(hits[0]) if hits else 0:6d}  {' '.join(first.split())}")


if __name__ == "__main__":
    main()
