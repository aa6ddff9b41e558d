#!/usr/bin/env python3
"""Checks of db/006_fair_claim.sql on fresh scratch databases (fair_test_*), dropped at the end.

Run: .venv-fair/bin/python benchmarks/fairclaim/test_fair_claim.py [--skip-big] [--keep]
Needs the private cluster (deploy/scripts/pg.sh start) on 127.0.0.1:54329, user lector.
"""
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import psycopg
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

HERE = os.path.dirname(os.path.abspath(__file__))
DSN = "host=127.0.0.1 port=54329 user=lector dbname={}"
SHA = b"\x00" * 32
failures = []


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        failures.append(what)


def fresh(name, mode="new"):
    subprocess.run([os.path.join(HERE, "mkdb.sh"), name, mode], check=True)
    return name


def drop(name):
    with psycopg.connect(DSN.format("postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(db):
    return psycopg.connect(DSN.format(db), autocommit=True)


def user(c, name):
    return c.execute("INSERT INTO users (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]


def submit(c, owner, n=1):
    ids = []
    for _ in range(n):
        jid = uuid.uuid4()
        c.execute("SELECT create_job(%s, %s, 'd.png', 'image/png', 1, %s, '{}', '{}', NULL, NULL)", (jid, owner, SHA))
        ids.append(jid)
    return ids


def claim(c, worker="w", now=None):
    row = c.execute("SELECT job_id, attempt FROM claim_job(%s, 60, %s, false)", (worker, now)).fetchone()
    return row


def owner_of(c, jid):
    return c.execute("SELECT owner_id FROM jobs WHERE id = %s", (jid,)).fetchone()[0]


def line(c):
    return [r[0] for r in c.execute("SELECT owner_id FROM queue_owners ORDER BY turn, joined")]


def test_alternation(db):
    print("(a) alternation and (b) oldest first within an owner")
    c = connect(db)
    a, b = user(c, "A"), user(c, "B")
    a_jobs = submit(c, a, 100)
    b_jobs = submit(c, b, 3)
    claimed = []
    while (row := claim(c)) is not None:
        claimed.append(row[0])
    owners = ["A" if owner_of(c, j) == a else "B" for j in claimed]
    check(len(claimed) == 103 and len(set(claimed)) == 103, f"103 distinct claims (got {len(claimed)})")
    check("".join(owners[:7]) == "ABABABA", f"first claims alternate: {''.join(owners[:10])}")
    check(all(o == "A" for o in owners[7:]), "then A only")
    check([j for j in claimed if j in set(a_jobs)] == a_jobs, "A's jobs in submission order")
    check([j for j in claimed if j in set(b_jobs)] == b_jobs, "B's jobs in submission order")
    order = c.execute(
        "SELECT array_agg(id ORDER BY created_at, id) FROM jobs WHERE owner_id = %s", (a,)).fetchone()[0]
    check(order == a_jobs, "submission order is (created_at, id) order")
    check(line(c) == [a] or line(c) == [], f"empty owners leave the line (line: {line(c)})")
    # Three owners, taking turns in the order they joined; a newcomer goes before owners already served.
    d, e, f = user(c, "D"), user(c, "E"), user(c, "F")
    submit(c, d, 5)
    submit(c, e, 5)
    got = [owner_of(c, claim(c)[0]) for _ in range(3)]
    submit(c, f, 2)
    got += [owner_of(c, claim(c)[0]) for _ in range(4)]
    names = {d: "D", e: "E", f: "F"}
    seq = "".join(names[o] for o in got)
    check(seq == "DEDFEDF", f"D,E round robin; newcomer F served next: {seq}")
    c.close()


def test_backoff(db):
    print("(c) backoff: not_before skipped within an owner, the owner keeps its turn")
    c = connect(db)
    a, b = user(c, "A"), user(c, "B")
    a1, a2, a3 = submit(c, a, 3)
    b1, b2 = submit(c, b, 2)
    c.execute("UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = %s", (a1,))
    got = []
    while (row := claim(c)) is not None:
        got.append(row[0])
    check(got == [a2, b1, a3, b2], "A's turn goes to its oldest claimable job: a2, b1, a3, b2")
    check(a in line(c), "A, with a job in backoff, stays in line")
    later = c.execute("SELECT now() + interval '2 hours'").fetchone()[0]
    row = claim(c, now=later)
    check(row is not None and row[0] == a1, "the backed-off job is claimed once its time has come")
    # An owner whose only jobs are in backoff goes to the back, and does not block the others.
    x, y = user(c, "X"), user(c, "Y")
    (x1,) = submit(c, x, 1)
    c.execute("UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = %s", (x1,))
    y_jobs = submit(c, y, 3)
    before = line(c)
    row = claim(c)
    check(row[0] == y_jobs[0], "an owner with only backed-off jobs is passed over")
    check(line(c).index(x) > 0 and x in line(c), f"and moves back in line, keeping its row (line {before} -> {line(c)})")
    rest = []
    while (row := claim(c)) is not None:
        rest.append(row[0])
    check(rest == y_jobs[1:], "the other owner's jobs are all claimed")
    row = claim(c, now=later)
    check(row is not None and row[0] == x1, "the backed-off owner's job is claimed when due")
    check(c.execute("SELECT attempts FROM jobs WHERE id = %s", (x1,)).fetchone()[0] == 1, "attempt counted")
    lease = c.execute("SELECT worker, attempt, expires_at - claimed_at FROM job_leases WHERE job_id = %s", (x1,)).fetchone()
    check(lease is not None and lease[1] == 1 and lease[2].total_seconds() == 60, f"lease written: {lease}")
    check(c.execute("SELECT not_before FROM jobs WHERE id = %s", (x1,)).fetchone()[0] is None, "not_before cleared")
    c.close()


def test_concurrent(db, owners=5, per_owner=60, claimers=8):
    print(f"(d) {claimers} concurrent claimers over {owners * per_owner} jobs of {owners} owners")
    c = connect(db)
    us = [user(c, f"C{i}") for i in range(owners)]
    jobs = []
    for i in range(per_owner):
        for u in us:
            jobs += submit(c, u, 1)
    results = [[] for _ in range(claimers)]
    errors = []

    def run(k):
        try:
            with connect(db) as cc:
                while (row := claim(cc, worker=f"w{k}")) is not None:
                    results[k].append(row[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [j for r in results for j in r]
    check(not errors, f"no errors {errors[:2]}")
    check(len(every) == len(jobs) and set(every) == set(jobs), f"each job claimed exactly once ({len(every)} claims)")
    left = c.execute("SELECT count(*) FROM jobs WHERE status = 'QUEUED'").fetchone()[0]
    check(left == 0, "none skipped (nothing left queued)")
    per_worker = [len(r) for r in results]
    check(sum(1 for n in per_worker if n > 0) > 1, f"claims spread over workers: {per_worker}")
    c.close()


def test_submit_race(db, rounds=400):
    """Submits of single jobs by several owners while claimers drain: an owner's row must never be removed
    while one of its jobs is queued (the advisory lock); checked at the end with the claim's repair bypassed."""
    print(f"(d2) submits racing claims that remove empty owners ({rounds} submits per owner, 4 owners, 3 claimers)")
    c = connect(db)
    us = [user(c, f"R{i}") for i in range(4)]
    stop = threading.Event()
    errors = []
    claimed = []
    orphans_seen = []

    def submitter(u):
        try:
            with connect(db) as cc:
                for _ in range(rounds):
                    submit(cc, u, 1)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    def claimer(k):
        try:
            with connect(db) as cc:
                while not stop.is_set():
                    row = claim(cc, worker=f"r{k}")
                    if row:
                        claimed.append(row[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    def watcher():
        # A queued job whose owner has no row, seen twice 50 ms apart (a job in the middle of its submit
        # transaction is not visible, so a committed orphan is what this finds).
        with connect(db) as cc:
            while not stop.is_set():
                q = ("SELECT j.id FROM jobs j WHERE j.status = 'QUEUED' AND NOT EXISTS "
                     "(SELECT 1 FROM queue_owners q WHERE q.owner_id = j.owner_id)")
                first = {r[0] for r in cc.execute(q)}
                if first:
                    time.sleep(0.05)
                    second = {r[0] for r in cc.execute(q)}
                    if first & second:
                        orphans_seen.append(first & second)
                time.sleep(0.01)

    subs = [threading.Thread(target=submitter, args=(u,)) for u in us]
    cls = [threading.Thread(target=claimer, args=(k,)) for k in range(3)]
    w = threading.Thread(target=watcher)
    for t in subs + cls + [w]:
        t.start()
    for t in subs:
        t.join()
    time.sleep(0.5)
    stop.set()
    for t in cls + [w]:
        t.join()
    check(not errors, f"no errors {errors[:2]}")
    orphan_now = c.execute(
        "SELECT count(*) FROM jobs j WHERE j.status = 'QUEUED' AND NOT EXISTS "
        "(SELECT 1 FROM queue_owners q WHERE q.owner_id = j.owner_id)").fetchone()[0]
    check(not orphans_seen and orphan_now == 0, f"no queued job without its owner in line (seen {len(orphans_seen)}, now {orphan_now})")
    while (row := claim(c)) is not None:
        claimed.append(row[0])
    check(len(claimed) == len(set(claimed)) == 4 * rounds, f"all {4 * rounds} claimed once ({len(claimed)})")
    dup = c.execute("SELECT count(*) - count(DISTINCT owner_id) FROM queue_owners").fetchone()[0]
    print(f"       (duplicate owner rows left: {dup}; rows: {c.execute('SELECT count(*) FROM queue_owners').fetchone()[0]})")
    c.close()
    return len(orphans_seen), orphan_now


def test_race_interleaved(db):
    """The two interleavings of a submit and a claim that removes the submitter's owner, forced with open
    transactions. Returns True when no orphan arose (run against a variant without the lock, it fails)."""
    print("(d3) submit vs. a claim removing its owner, both interleavings forced")
    c = connect(db)
    x, y = user(c, "X"), user(c, "Y")
    (x0,) = submit(c, x, 1)
    submit(c, y, 20)  # Y's backlog is older than anything X submits next
    check(claim(c)[0] == x0, "X served first; X now has nothing queued but is still in line")
    # 1. The submit has looked at queue_owners (X's row is there, so it adds none) and not committed when the
    #    claim comes to X's turn.
    s = connect(db)
    s.execute("BEGIN")
    (x1,) = submit(s, x, 1)
    claim(c)  # Y's turn
    row = claim(c)  # X's turn: nothing of X visible
    s.execute("COMMIT")
    ok1 = x in line(c)
    check(ok1, f"submit in flight: X kept in line (claim took {'Y' if owner_of(c, row[0]) == y else 'X'})")
    # 2. The claim removes X (X's turn, nothing queued) and has not committed when a submit of X starts.
    got = []
    while True:
        row = claim(c)
        got.append(owner_of(c, row[0]))
        if row[0] == x1:
            break
    c.execute("BEGIN")
    row = claim(c)  # Y's turn ...
    if x in line(c):
        row = claim(c)  # ... then X's turn: X removed, the claim still open
    check(x not in line(c), "the open claim removed X")
    done = threading.Event()
    result = {}

    def late_submit():
        with connect(db) as cc:
            result["id"] = submit(cc, x, 1)[0]
        done.set()

    t = threading.Thread(target=late_submit)
    t.start()
    time.sleep(0.3)
    waited = not done.is_set()
    c.execute("COMMIT")
    t.join()
    ok2 = x in line(c)
    check(waited, "the submit waited for the removing claim's commit")
    check(ok2, "and then put X back in line")
    s.close()
    c.close()
    return ok1 and ok2


def test_orphan(db):
    print("(e) a queued job whose owner is not in line is still claimed")
    c = connect(db)
    a, z = user(c, "A"), user(c, "Z")
    a_jobs = submit(c, a, 5)
    oid = uuid.uuid4()
    # Fabricated without the trigger, older than everything: the owner has no queue_owners row.
    c.execute(
        "INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, created_at) "
        "VALUES (%s, %s, 'o.png', 'image/png', 1, %s, 'QUEUED', now() - interval '1 day')", (oid, z, SHA))
    check(z not in line(c), "Z has no row")
    row = claim(c)
    check(row[0] == oid, "claimed at the first claim (it is the oldest)")
    # An orphan that is not the oldest: claimed once every older job has been.
    oid2 = uuid.uuid4()
    c.execute(
        "INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, created_at) "
        "VALUES (%s, %s, 'o.png', 'image/png', 1, %s, 'QUEUED', now() + interval '1 second')", (oid2, z, SHA))
    c.execute("DELETE FROM queue_owners WHERE owner_id = %s", (z,))
    got = []
    while (row := claim(c)) is not None:
        got.append(row[0])
    check(got == a_jobs + [oid2], "a younger orphan is claimed after the older jobs, not lost")
    c.close()


def test_requeue(db):
    print("(f) requeued jobs (rescuer, worker requeue with backoff) are claimable again")
    c = connect(db)
    r, s = user(c, "R"), user(c, "S")
    (r1,) = submit(c, r, 1)
    s_jobs = submit(c, s, 3)
    row = claim(c)
    check(row[0] == r1, "R's job claimed")
    claim(c)  # S
    claim(c)  # R's turn: nothing queued -> R leaves the line; S served
    check(r not in line(c), f"R left the line: {line(c)}")
    # The rescuer's statement (JobStore.rescueExpired), with the lease expired.
    c.execute("UPDATE job_leases SET expires_at = now() - interval '1 hour' WHERE job_id = %s", (r1,))
    c.execute("""
        WITH expired AS (
            SELECT job_id, attempt FROM job_leases WHERE expires_at < now() ORDER BY expires_at LIMIT 500
            FOR UPDATE SKIP LOCKED)
        INSERT INTO job_transitions (job_id, status, reason)
        SELECT job_id, 'QUEUED', 'worker lost: its lease expired during attempt ' || attempt FROM expired""")
    check(r in line(c), "the requeue put R back in line")
    row = claim(c)
    check(row is not None and row[0] == r1 and row[1] == 2, f"the rescued job is claimed again, attempt 2: {row}")
    # A worker's requeue with a delay (JobStore.requeue): QUEUED transition, then not_before.
    with c.transaction():
        c.execute("SELECT 1 FROM job_leases WHERE job_id = %s FOR UPDATE", (r1,))
        c.execute("INSERT INTO job_transitions (job_id, status, worker, reason) VALUES (%s, 'QUEUED', 'w', 'transient')", (r1,))
        c.execute("UPDATE jobs SET not_before = now() + interval '30 seconds' WHERE id = %s", (r1,))
    got = []
    while (row := claim(c)) is not None:
        got.append(row[0])
    check(r1 not in got, "not claimable during its backoff")
    later = c.execute("SELECT now() + interval '1 minute'").fetchone()[0]
    row = claim(c, now=later)
    check(row is not None and row[0] == r1 and row[1] == 3, f"claimable after it: {row}")
    c.close()


def test_skip_locked(db):
    print("skip-locked branch: plain FIFO, leaves queue_owners alone")
    c = connect(db)
    a, b = user(c, "A"), user(c, "B")
    a_jobs = submit(c, a, 3)
    b_jobs = submit(c, b, 1)
    before = c.execute("SELECT array_agg((owner_id, turn, joined)::text ORDER BY joined) FROM queue_owners").fetchone()[0]
    got = [c.execute("SELECT job_id FROM claim_job('w', 60, NULL, true)").fetchone()[0] for _ in range(4)]
    after = c.execute("SELECT array_agg((owner_id, turn, joined)::text ORDER BY joined) FROM queue_owners").fetchone()[0]
    check(got == a_jobs + b_jobs, "FIFO")
    check(before == after, "queue_owners untouched")
    check(c.execute("SELECT current_setting('synchronous_commit')").fetchone()[0] == "on", "synchronous_commit back on after the claim")
    submit(c, a, 1)
    with c.transaction():
        c.execute("SELECT * FROM claim_job('w', 60, NULL, false)")
        inside = c.execute("SELECT current_setting('synchronous_commit'), current_setting('enable_seqscan')").fetchone()
    check(inside == ("off", "on"), f"after a fair claim, in its transaction: synchronous_commit off, enable_seqscan on: {inside}")
    c.close()


def test_backfill(db):
    print("(h) the migration puts owners with queued jobs in line, oldest first")
    fresh(db, "old")
    c = connect(db)
    a, b, d = user(c, "A"), user(c, "B"), user(c, "D")
    b_jobs = submit(c, b, 2)
    a_jobs = submit(c, a, 2)
    submit(c, d, 1)
    claim(c)  # the old FIFO claim: B's first job
    row = c.execute("SELECT id FROM jobs WHERE owner_id = %s", (d,)).fetchone()[0]
    c.execute("INSERT INTO job_transitions (job_id, status) VALUES (%s, 'FAILURE')", (row,))
    subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "54329", "-U", "lector",
                    "-d", db, "-f", os.path.join(ROOT, "db", "006_fair_claim.sql")], check=True, stdout=subprocess.DEVNULL)
    check(line(c) == [b, a], f"line is B, A (D has nothing queued): {line(c)}")
    got = []
    while (row := claim(c)) is not None:
        got.append(row[0])
    check(got == [b_jobs[1], a_jobs[0], a_jobs[1]], "then claims take turns")
    c.close()


def test_plans(db, history=1_000_000, backlog=100_000):
    print(f"(g) plans with {history:,} finished jobs and an owner with {backlog:,} queued")
    c = connect(db)
    a, b = user(c, "A"), user(c, "B")
    others = [user(c, f"O{i}") for i in range(10)]
    t0 = time.time()
    c.execute("SET session_replication_role = replica")
    c.execute(f"""
        INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, attempts, created_at)
        SELECT gen_random_uuid(), CASE WHEN g %% 2 = 0 THEN {a} ELSE {b} END, 'old.png', 'image/png', 1, %s, 'FINISHED', 1,
               now() - interval '30 days' + g * interval '1 millisecond'
        FROM generate_series(1, {history}) g""", (SHA,))
    c.execute(f"""
        INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, status, created_at)
        SELECT gen_random_uuid(), {a}, 'q.png', 'image/png', 1, %s, 'QUEUED', now() - interval '1 day' + g * interval '1 millisecond'
        FROM generate_series(1, {backlog}) g""", (SHA,))
    c.execute("SET session_replication_role = DEFAULT")
    c.execute("INSERT INTO queue_owners (owner_id, turn, joined) VALUES (%s, 0, nextval('queue_turns'))", (a,))
    for o in others:
        submit(c, o, 3)
    c.execute("VACUUM ANALYZE jobs")
    c.execute("VACUUM ANALYZE queue_owners")
    print(f"       loaded in {time.time() - t0:.0f} s")
    notices = []
    c.add_notice_handler(lambda n: notices.append(n.message_primary))
    c.execute("LOAD 'auto_explain'")
    for k, v in [("log_min_duration", "0"), ("log_analyze", "on"), ("log_buffers", "on"),
                 ("log_nested_statements", "on"), ("log_level", "notice"), ("log_timing", "off")]:
        c.execute(f"SET auto_explain.{k} = {v}")
    # Warm up (plans cached per session; the first claims also set hint bits), then look at one claim of
    # the big owner and one of a small owner, with custom and with generic plans.
    for mode in ("auto", "force_generic_plan"):
        c.execute(f"SET plan_cache_mode = {mode}")
        with connect(db) as w:  # a claim in another session, so that this session's first plans are not special
            claim(w)
        for _ in range(12):
            claim(c)
        # The owner next in line has only jobs in backoff: the measured claims include a pass-over.
        c.execute("UPDATE jobs SET not_before = now() + interval '1 hour' WHERE status = 'QUEUED' AND owner_id = "
                  "(SELECT owner_id FROM queue_owners ORDER BY turn, joined LIMIT 1) AND owner_id <> %s", (a,))
        notices.clear()
        for _ in range(2):
            claim(c)
        plans = [n for n in notices if "Query Text" in n]
        inner = [p for p in plans if "FROM claim_job(" not in p]
        outer = [p for p in plans if "FROM claim_job(" in p]
        seq = [p for p in inner if "Seq Scan on jobs" in p or "Seq Scan on job_" in p]
        small = sum(1 for p in inner if "Seq Scan on queue_owners" in p)
        check(not seq, f"[{mode}] no sequential scan of jobs in the {len(inner)} statements of two claims"
                       f" ({small} of the one-page queue_owners)")
        worst = 0
        for p in inner:
            hits = [int(x) for x in re.findall(r"shared hit=(\d+)", p)]
            reads = [int(x) for x in re.findall(r"read=(\d+)", p)]
            total = (hits[0] if hits else 0) + (reads[0] if reads else 0)
            worst = max(worst, total)
        whole = [int(re.findall(r"shared hit=(\d+)", p)[0]) for p in outer]
        check(worst <= 40, f"[{mode}] at most {worst} buffers per statement; whole claims: {whole}")
        probe = [p for p in inner if "j.owner_id >= v_candidate" in p]
        check(probe and all("jobs_owner_queued_idx" in p for p in probe), f"[{mode}] owner probes use jobs_owner_queued_idx")
        used = set(re.findall(r"using (\w+)", "\n".join(inner)))
        check({"jobs_queued_idx", "jobs_owner_queued_idx", "queue_owners_turn_idx"} <= used, f"[{mode}] indexes: {sorted(used)}")
        with open(os.path.join(HERE, f"plans_{mode}.txt"), "w") as fh:
            fh.write("\n\n".join(plans))
    c.close()


def main():
    keep = "--keep" in sys.argv
    dbs = []
    tests = [test_alternation, test_backoff, test_concurrent, test_submit_race, test_race_interleaved, test_orphan, test_requeue, test_skip_locked]
    for i, t in enumerate(tests):
        db = fresh(f"fair_test_{i}")
        dbs.append(db)
        t(db)
    db = f"fair_test_{len(tests)}"
    dbs.append(db)
    test_backfill(db)
    if "--skip-big" not in sys.argv:
        db = fresh("fair_test_big")
        dbs.append(db)
        test_plans(db)
    if not keep:
        for db in dbs:
            drop(db)
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
