"""The KEDA trigger's SQL (deploy/k8s/keda-queue-depth.sql) against the real schema, and the replica count KEDA
would compute from it with the limits of deploy/k8s/base/keda.yaml.

    LECTOR_TEST_DATABASE_URL=postgres://lector@127.0.0.1:54329/postgres python3 Tests/deploy/test_keda_query.py

The URL names a role that may create databases (deploy/scripts/pg.sh start gives one). A scratch database gets
db/*.sql applied with psql; each scenario runs in a copy of it, with jobs made through the schema's own
functions (create_job, claim_job, end_job) and transitions, and all of them are dropped at the end. Standard
library and psql only (plain python3, no pytest; pytest can collect it too). Skipped when
LECTOR_TEST_DATABASE_URL is not set; exits non-zero when a test fails or errs.
"""
import glob
import math
import os
import re
import subprocess
import unittest
import urllib.parse
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SQL_FILE = os.path.join(ROOT, "deploy", "k8s", "keda-queue-depth.sql")
SCALED_OBJECT = os.path.join(ROOT, "deploy", "k8s", "base", "keda.yaml")
URL = os.environ.get("LECTOR_TEST_DATABASE_URL", "")
PREFIX = f"lector_kedatest_{os.getpid()}"


def with_database(url, name):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def psql(url, sql=None, file=None):
    command = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]
    command += ["-f", file] if file else ["-c", sql]
    try:
        run = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise AssertionError("psql not found: install PostgreSQL's client (Debian: apt-get install postgresql-client)") from None
    if run.returncode != 0:
        raise AssertionError(f"psql failed ({' '.join(command[-2:])[:200]}): {run.stderr.strip()}")
    return run.stdout.strip()


def scaler_settings():
    """minReplicaCount, maxReplicaCount, targetQueryValue, activationTargetQueryValue of the ScaledObject (a
    few scalars, read without a YAML library)."""
    with open(SCALED_OBJECT) as f:
        text = f.read()

    def number(key):
        match = re.search(rf"^\s+{key}:\s*\"?([0-9.]+)\"?\s*$", text, re.M)
        if not match:
            raise AssertionError(f"{key} not found in {SCALED_OBJECT}")
        return float(match.group(1))

    return {k: number(k) for k in ("minReplicaCount", "maxReplicaCount", "targetQueryValue", "activationTargetQueryValue")}


def keda_replicas(value, s):
    """What KEDA + the HPA settle on for a ScaledObject: at or below the activation value the target is
    inactive and KEDA scales to minReplicaCount; above it the HPA's AverageValue rule,
    ceil(value / targetQueryValue), bounded by the replica counts (at least 1 while active)."""
    if value <= s["activationTargetQueryValue"]:
        return int(s["minReplicaCount"])
    wanted = math.ceil(value / s["targetQueryValue"])
    return int(min(max(wanted, s["minReplicaCount"], 1), s["maxReplicaCount"]))


# A scenario: jobs to leave QUEUED (fresh, handed back by a stopping worker, waiting for a retry), running
# (one of them with an expired lease, not yet rescued), FINISHED and FAILURE (after a claim, or straight from
# the queue).
SCENARIOS = {
    "nothing to do": dict(queued=0, handed_back=0, backoff=3, running=0, finished=5, failed=2, refused=1),
    "busy workers, empty queue": dict(queued=0, handed_back=0, backoff=1, running=2, finished=3, failed=1, refused=0),
    "7 queued": dict(queued=5, handed_back=2, backoff=2, running=0, finished=4, failed=1, refused=1),
    "7 queued, 6 waiting for another job": dict(queued=7, handed_back=0, backoff=2, running=0, finished=1, failed=0,
                                                refused=0, blocked=6),
    "7 queued, 3 running": dict(queued=7, handed_back=0, backoff=1, running=3, finished=2, failed=2, refused=0),
    "100 queued": dict(queued=100, handed_back=0, backoff=5, running=4, finished=20, failed=3, refused=2),
    # A 24-page PDF split into page tasks: 2 pages read, 3 being read, 1 waiting for its retry: 18 claimable.
    "a split PDF, 2 queued": dict(queued=2, handed_back=0, backoff=0, running=0, finished=1, failed=0, refused=0,
                                  split=(24, 2, 3, 1)),
}

CREATE = """SELECT create_job(gen_random_uuid(), {owner}, 'page.png', 'image/png', 1, sha256('x'::bytea), '{{}}', '{{}}',
                  NULL, NULL) FROM generate_series(1, {n})"""


def fabricate(url, queued, handed_back, backoff, running, finished, failed, refused, blocked=0, split=None):
    owner = psql(url, "INSERT INTO users (name) VALUES ('keda-test') RETURNING id")
    if split:
        # One job claimed and split into `pages` page tasks (db/014): `done` read, `reading` being read, `waiting` in
        # their retry backoff. Made first, so that the claim takes this job.
        pages, done, reading, waiting = split
        psql(url, CREATE.format(owner=owner, n=1))
        psql(url, f"""
            DO $$
            DECLARE c record; p record;
            BEGIN
              SELECT * INTO c FROM claim_job('splitter/1', 60, NULL, false);
              IF split_job(c.job_id, 'splitter/1', c.attempt, {pages}) <> 'split' THEN RAISE EXCEPTION 'not split'; END IF;
              FOR i IN 1..{done + reading + waiting} LOOP
                SELECT * INTO p FROM claim_page(NULL, 'reader/' || i, 60, NULL, NULL);
                IF i <= {done} THEN
                  PERFORM end_page(p.job_id, p.page, 'reader/' || i, p.attempt, NULL, 60);
                ELSIF i > {done + reading} THEN
                  -- A transient error: queued again, claimable in 5 minutes.
                  UPDATE page_tasks SET state = 'queued', worker = NULL, expires_at = NULL, not_before = now() + interval '5 minutes'
                  WHERE job_id = p.job_id AND page = p.page;
                END IF;
              END LOOP;
            END $$""")
    claimed = running + finished + failed + handed_back
    if claimed:
        # Claim the oldest jobs (all of these), then end or hand back all but `running` of them.
        psql(url, CREATE.format(owner=owner, n=claimed))
        psql(url, f"""
            DO $$
            DECLARE c record;
            BEGIN
              FOR i IN 1..{claimed} LOOP
                SELECT * INTO c FROM claim_job('test-worker/' || i, 60, NULL, false);
                IF c.job_id IS NULL THEN RAISE EXCEPTION 'nothing to claim'; END IF;
                IF i <= {finished} THEN
                  PERFORM end_job(c.job_id, 'test-worker/' || i, c.attempt, 'FINISHED', NULL);
                ELSIF i <= {finished + failed} THEN
                  PERFORM end_job(c.job_id, 'test-worker/' || i, c.attempt, 'FAILURE', 'unreadable');
                ELSIF i <= {finished + failed + handed_back} THEN
                  -- What a worker does with a job it could not finish within LECTOR_SHUTDOWN_GRACE.
                  INSERT INTO job_transitions (job_id, status, worker, reason)
                  VALUES (c.job_id, 'QUEUED', 'test-worker/' || i, 'handed back');
                END IF;
              END LOOP;
            END $$""")
    if running:
        psql(url, """UPDATE job_leases SET expires_at = now() - interval '1 minute'
                     WHERE job_id = (SELECT job_id FROM job_leases ORDER BY job_id LIMIT 1)""")
    if queued:
        psql(url, CREATE.format(owner=owner, n=queued))
    if backoff:
        # QUEUED again after a transient error, not claimable before not_before: no worker needed yet.
        ids = create_with_ids(url, owner, backoff)
        psql(url, f"UPDATE jobs SET not_before = now() + interval '5 minutes' WHERE id IN ({ids})")
    if blocked:
        # QUEUED behind a dependency that has not finished (one of the jobs in backoff): not claimable.
        psql(url, f"""SELECT create_job(gen_random_uuid(), {owner}, 'page.png', 'image/png', 1, sha256('x'::bytea), '{{}}',
                          '{{}}', NULL, NULL, NULL, 0::int2,
                          ARRAY(SELECT id FROM jobs WHERE not_before IS NOT NULL ORDER BY id LIMIT 1))
                      FROM generate_series(1, {blocked})""")
    if refused:
        # Failed straight from the queue (QUEUED -> FAILURE is a legal transition).
        ids = create_with_ids(url, owner, refused)
        psql(url, f"INSERT INTO job_transitions (job_id, status, reason) SELECT id, 'FAILURE', 'refused' FROM jobs WHERE id IN ({ids})")


def create_with_ids(url, owner, n):
    ids = ", ".join(f"'{uuid.uuid4()}'::uuid" for _ in range(n))
    psql(url, f"""SELECT create_job(id, {owner}, 'page.png', 'image/png', 1, sha256('x'::bytea), '{{}}', '{{}}', NULL, NULL)
                  FROM unnest(ARRAY[{ids}]) AS id""")
    return ids


@unittest.skipUnless(URL, "set LECTOR_TEST_DATABASE_URL to a PostgreSQL URL whose role may create databases")
class KedaQueueDepthTest(unittest.TestCase):
    template = PREFIX + "_template"

    @classmethod
    def setUpClass(cls):
        cls.databases = []
        psql(URL, f'CREATE DATABASE "{cls.template}"')
        cls.databases.append(cls.template)
        for migration in sorted(glob.glob(os.path.join(ROOT, "db", "*.sql"))):
            psql(with_database(URL, cls.template), file=migration)
        with open(SQL_FILE) as f:
            cls.query = f.read()
        cls.settings = scaler_settings()

    @classmethod
    def tearDownClass(cls):
        for name in cls.databases:
            psql(URL, f'DROP DATABASE IF EXISTS "{name}"')

    def scenario_database(self, index):
        name = f"{PREFIX}_{index}"
        psql(URL, f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.databases.append(name)
        return with_database(URL, name)

    def test_scaler_limits(self):
        # The intent the scenarios below rely on: idle -> no pods, one job per pod (one slot), and a ceiling.
        self.assertEqual(self.settings["minReplicaCount"], 0)
        self.assertEqual(self.settings["activationTargetQueryValue"], 0)
        self.assertEqual(self.settings["targetQueryValue"], 1)
        self.assertGreaterEqual(self.settings["maxReplicaCount"], 1)

    def test_scenarios(self):
        for index, (title, jobs) in enumerate(SCENARIOS.items()):
            with self.subTest(title):
                url = self.scenario_database(index)
                fabricate(url, **jobs)
                # Workers are needed for claimable QUEUED jobs and for jobs IN_PROGRESS, and for the claimable and
                # running pages of a split job (not for the split job itself): nothing else.
                expected = jobs["queued"] + jobs["handed_back"] + jobs["running"]
                if "split" in jobs:
                    pages, done, reading, waiting = jobs["split"]
                    expected += pages - done - waiting
                counts = dict(line.split("|") for line in psql(url, "SELECT status, count(*) FROM jobs GROUP BY status").splitlines())
                self.assertEqual(int(counts.get("IN_PROGRESS", 0)), jobs["running"] + (1 if "split" in jobs else 0), counts)
                self.assertEqual(int(counts.get("QUEUED", 0)),
                                 jobs["queued"] + jobs["handed_back"] + jobs["backoff"] + jobs.get("blocked", 0), counts)
                value = float(psql(url, self.query))
                self.assertEqual(value, expected, f"{title}: the query counted {value:g}, expected {expected}")
                wanted = min(math.ceil(expected / self.settings["targetQueryValue"]), self.settings["maxReplicaCount"])
                self.assertEqual(keda_replicas(value, self.settings), wanted)
                print(f"  {title}: query = {value:g} -> {keda_replicas(value, self.settings)} worker pod(s)")

    def test_replica_rule(self):
        s = self.settings
        self.assertEqual(keda_replicas(0, s), 0)
        self.assertEqual(keda_replicas(7, s), 7)
        self.assertEqual(keda_replicas(100, s), int(s["maxReplicaCount"]) if s["maxReplicaCount"] < 100 else 100)


if __name__ == "__main__":
    unittest.main(verbosity=2)
