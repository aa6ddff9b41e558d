-- Fairness between users at the claim. claim_job (004) took the globally oldest claimable job, so one user with
-- a large backlog delayed every other user's jobs by the whole backlog: a denial of service by volume. The
-- claim now takes turns between owners, the owner served least recently first, and the oldest claimable job
-- within that owner. It stays one function call under the same table lock, and every read it makes is the
-- head of a small index: its cost grows neither with the finished history nor with one owner's backlog. See
-- docs/design/queue.md, "The claim".

-- One owner's queued jobs, oldest first: the claim reads the head of one owner's range. Partial, like
-- jobs_queued_idx, so finished jobs are not in it. (jobs_owner_idx holds every job an owner ever had, so a
-- probe through it would walk that owner's history.) Built in the migration's transaction, so writes to jobs
-- wait for the build (0.2 s with a million finished jobs on a development machine); CONCURRENTLY cannot run
-- inside a transaction.
CREATE INDEX jobs_owner_queued_idx ON jobs (owner_id, created_at, id) WHERE status = 'QUEUED';

-- The turn order. One row per owner that may have queued jobs; the claim serves the row with the smallest
-- (turn, joined). turn is 0 for an owner that joined the line and has not been served since, otherwise the
-- value of queue_turns when it was last served (or last passed over, see claim_job): least recently served
-- first, and an owner that joins goes before every owner already served, in the order they joined (an owner
-- only leaves the line when the claim finds it with nothing queued at its turn, so it cannot rejoin more than
-- once a round to jump ahead).
--
-- Submits and requeues only ever INSERT here, and only when no row of the owner is visible; claims alone
-- update and delete, one at a time under job_claim_lock. There is deliberately no unique key on owner_id: a
-- unique insert (even INSERT ... ON CONFLICT DO NOTHING) waits for any uncommitted transaction that inserted,
-- updated or deleted the same key, so a submit would wait for a concurrent claim moving its owner, two first
-- submits of one owner would run one after the other until commit, two rescuers requeueing the same owners in
-- opposite orders could deadlock, and a claim repairing a row (below) could wait for a submit's commit while
-- holding the queue's lock. Without a unique key no insert ever waits; the price is that concurrent first
-- submits of one owner may add two rows. The claim treats all rows of an owner as one: it moves and deletes by
-- owner_id and gives them one turn value, so a duplicate never earns an extra turn, and it disappears when the
-- owner leaves the line.
--
-- No foreign key to users: jobs.owner_id already has one, and a row here is only scheduling state.
CREATE SEQUENCE queue_turns;
CREATE TABLE queue_owners (
    owner_id  bigint NOT NULL,
    turn      bigint NOT NULL,
    joined    bigint NOT NULL
);
CREATE INDEX queue_owners_turn_idx ON queue_owners (turn, joined);
CREATE INDEX queue_owners_owner_idx ON queue_owners (owner_id);

-- The transition trigger (002) now also puts the owner of a job that becomes QUEUED in line. This is the one
-- place every job enters the queue: create_job (005), the rescuer, a worker's requeue and the graceful
-- hand-back all append a QUEUED transition, so create_job stays as it was.
--
-- Why a shared advisory lock: the claim removes an owner from the line when it finds nothing queued for it.
-- Without the lock, a submit could see the owner's row (and add none), then the claim, not seeing the submit's
-- uncommitted job, delete the row: a queued job whose owner is not in line. The submit holds the lock (per
-- owner, SHARE) from before its look at queue_owners until it commits; the claim deletes only after taking it
-- exclusively with pg_try_advisory_xact_lock, which never waits, and then looking again. Submits of one owner
-- share the lock, so they never wait for each other; one waits only for a claim that is removing that very
-- owner, a few microseconds of server work. Key: class 0x4C514F57 ("LQOW") and the owner's id hashed to
-- int4; this two-int4 form never equals the Migrator's one-bigint key, and a hash collision only makes the
-- claim keep a row it could have deleted.
--
-- enable_seqscan is off in here (and in claim_job): queue_owners is one page after a vacuum, so a plan made then
-- reads it sequentially, PL/pgSQL keeps that plan for the session, and every claim leaves a dead row version
-- behind until the next autovacuum (at most one a minute): after 20,000 claims the look-up by owner read 70
-- pages, in every submit too. The index by owner stays small (bottom-up deletion removes the versions of an
-- unchanged key). Every other statement here is a primary-key look-up, which the setting does not change.
CREATE OR REPLACE FUNCTION job_transition_apply() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    current text;
    v_owner bigint;
BEGIN
    SELECT status, owner_id INTO current, v_owner FROM jobs WHERE id = NEW.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', NEW.job_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NOT (
           (current IS NULL AND NEW.status = 'QUEUED')
        OR (current = 'QUEUED' AND NEW.status IN ('IN_PROGRESS', 'FAILURE'))
        OR (current = 'IN_PROGRESS' AND NEW.status IN ('FINISHED', 'FAILURE', 'QUEUED'))
    ) THEN
        RAISE EXCEPTION 'illegal transition of job % from % to %', NEW.job_id, coalesce(current, 'nothing'), NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE jobs SET status = NEW.status WHERE id = NEW.job_id;
    IF NEW.status <> 'IN_PROGRESS' THEN
        DELETE FROM job_leases WHERE job_id = NEW.job_id;
    END IF;
    IF NEW.status = 'QUEUED' THEN
        -- Lock first, then look (a separate statement, so a fresh snapshot at READ COMMITTED): a claim that
        -- deleted the row before we got the lock has committed, and we see that the row is gone.
        PERFORM pg_advisory_xact_lock_shared(1280397143, hashint8(v_owner));
        IF NOT EXISTS (SELECT 1 FROM queue_owners q WHERE q.owner_id = v_owner) THEN
            INSERT INTO queue_owners (owner_id, turn, joined) VALUES (v_owner, 0, nextval('queue_turns'));
        END IF;
        PERFORM pg_notify('lector_job_queued', '');
    END IF;
    -- Endings are announced on lector_job_events with every other transition (db/007), which the API
    -- LISTENs to; the lector_job_ended channel of 002 has no listener any more and is not sent.
    RETURN NEW;
END;
$$;

-- The claim, fair. Same signature and result type as 004, so the prepared statement lector_claim_job_v1 keeps
-- working; everything else of 004 holds: one transaction, the table lock, synchronous_commit off for the claim
-- only, the attempt counted, not_before cleared, the lease written.
--
-- Under the lock:
--   1. The oldest claimable job overall (the head of jobs_queued_idx, as in 004). None: nothing to do, so an
--      idle poll costs what it cost before. Its owner not in line (a job queued without the trigger: rows
--      fabricated by SQL, or queued by the old trigger while this migration ran): put it at the head of the
--      line (joined 0, before every newcomer), so this very claim serves it. No queued job is ever stranded:
--      one whose owner is not in line is served, at the latest, by the claim at which it is the oldest.
--   2. Owners in turn order, at most 8: for each, its oldest claimable job (the head of its range of
--      jobs_owner_queued_idx). Within an owner, jobs in backoff are skipped, so its turn goes to its next job.
--      An owner with nothing claimable is removed from the line when nothing of it is queued at all (under
--      the advisory lock, see the trigger), otherwise (jobs only in backoff, or a submit of it in flight) it
--      goes to the back: it keeps its row, and so its place in the rotation, and costs one look per round
--      instead of one per claim. Each owner passed over is removed or moved, so the bound is rarely reached.
--   3. None of the 8 had a claimable job: the job from step 1, plain FIFO for this one claim.
--   4. The served owner goes to the back of the line.
--
-- The p_skip_locked branch is the measuring alternative of 004 (BENCHMARKS.md, P3) and stays plain FIFO:
-- without the table lock, concurrent claims would contend on the rows of queue_owners. It neither reads nor
-- writes queue_owners; owners it leaves in line with nothing queued are removed by the next fair claims.
CREATE OR REPLACE FUNCTION claim_job(p_worker text, p_lease_seconds float8, p_now timestamptz, p_skip_locked boolean)
RETURNS TABLE (job_id uuid, attempt integer, content_type text, options text)
LANGUAGE plpgsql
-- See job_transition_apply. A setting of the function, so it ends with the call; SET LOCAL of another setting
-- (synchronous_commit, below) still lasts until the commit.
SET enable_seqscan = off
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_id uuid;
    v_owner bigint;
    v_head uuid;
    v_head_owner bigint;
    v_candidate bigint;
    v_seen bigint[] := '{}';
    v_removable boolean;
    v_turn bigint;
    -- One row per FETCH (a FOR loop over a query would read ten at a time); the rows are those of the
    -- snapshot at OPEN, so an owner moved to the back in this loop does not come round again.
    line CURSOR FOR SELECT q.owner_id FROM queue_owners q ORDER BY q.turn, q.joined LIMIT 8;
BEGIN
    SET LOCAL synchronous_commit = off;
    IF p_skip_locked THEN
        SELECT j.id INTO v_id FROM jobs j
        WHERE j.status = 'QUEUED' AND (j.not_before IS NULL OR j.not_before <= v_now)
        ORDER BY j.created_at, j.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
    ELSE
        LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
        SELECT j.id, j.owner_id INTO v_head, v_head_owner FROM jobs j
        WHERE j.status = 'QUEUED' AND (j.not_before IS NULL OR j.not_before <= v_now)
        ORDER BY j.created_at, j.id
        LIMIT 1;
        IF v_head IS NULL THEN
            RETURN;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM queue_owners q WHERE q.owner_id = v_head_owner) THEN
            INSERT INTO queue_owners (owner_id, turn, joined) VALUES (v_head_owner, 0, 0);
        END IF;
        OPEN line;
        LOOP
            FETCH line INTO v_candidate;
            EXIT WHEN NOT FOUND;
            CONTINUE WHEN v_candidate = ANY (v_seen);  -- a second row of the same owner
            v_seen := v_seen || v_candidate;
            -- owner_id as a range of one, and first in ORDER BY, so that only jobs_owner_queued_idx gives the
            -- order. With owner_id = v_candidate, jobs_queued_idx gives it too (owner_id is then a constant),
            -- and the generic plan (PL/pgSQL switches to one after five calls), which guesses an owner's share
            -- of the queue from statistics of the whole table, took it: it walked the queue filtering on the
            -- owner, 2,400 buffers per claim behind another owner's 100,000 queued jobs.
            SELECT j.id INTO v_id FROM jobs j
            WHERE j.status = 'QUEUED' AND j.owner_id >= v_candidate AND j.owner_id <= v_candidate
              AND (j.not_before IS NULL OR j.not_before <= v_now)
            ORDER BY j.owner_id, j.created_at, j.id
            LIMIT 1;
            IF v_id IS NOT NULL THEN
                v_owner := v_candidate;
                EXIT;
            END IF;
            -- Take the lock, then look again in a new statement (a snapshot taken after the lock): a submit
            -- that committed before we got it is visible, one that has not started waits for our commit and
            -- then sees the row gone. Not got: a submit or requeue of this owner is in flight.
            v_removable := pg_try_advisory_xact_lock(1280397143, hashint8(v_candidate));
            IF v_removable THEN
                PERFORM 1 FROM jobs j
                WHERE j.status = 'QUEUED' AND j.owner_id >= v_candidate AND j.owner_id <= v_candidate
                ORDER BY j.owner_id, j.created_at, j.id
                LIMIT 1;
                v_removable := NOT FOUND;
            END IF;
            IF v_removable THEN
                DELETE FROM queue_owners q WHERE q.owner_id = v_candidate;
            ELSE
                v_turn := nextval('queue_turns');
                UPDATE queue_owners q SET turn = v_turn WHERE q.owner_id = v_candidate;
            END IF;
        END LOOP;
        CLOSE line;
        IF v_id IS NULL THEN
            v_id := v_head;
            v_owner := v_head_owner;
        END IF;
        v_turn := nextval('queue_turns');
        UPDATE queue_owners q SET turn = v_turn WHERE q.owner_id = v_owner;
    END IF;
    IF v_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO job_transitions (job_id, status, worker) VALUES (v_id, 'IN_PROGRESS', p_worker);
    UPDATE jobs j SET attempts = j.attempts + 1, not_before = NULL WHERE j.id = v_id;
    INSERT INTO job_leases (job_id, worker, attempt, claimed_at, expires_at)
    SELECT v_id, p_worker, j.attempts, v_now, v_now + make_interval(secs => p_lease_seconds)
    FROM jobs j WHERE j.id = v_id;
    RETURN QUERY
        SELECT j.id, j.attempts, j.content_type, j.options::text FROM jobs j WHERE j.id = v_id;
END;
$$;

-- Owners with jobs queued now join the line in the order of their oldest queued job. A job queued by the old
-- trigger after this statement's snapshot, while the migration runs, is put in line by the claim's step 1.
INSERT INTO queue_owners (owner_id, turn, joined)
SELECT owner_id, 0, row_number() OVER (ORDER BY min(created_at), owner_id)
FROM jobs
WHERE status = 'QUEUED'
GROUP BY owner_id;
SELECT setval('queue_turns', (SELECT count(*) + 1 FROM queue_owners), false);
