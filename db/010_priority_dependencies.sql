-- Priorities and dependencies (issue 16). See docs/design/queue.md, "Priorities and dependencies".
--
-- priority: 0-9, higher first; within a priority, oldest first. Fairness between owners (006) comes first: the
-- claim still serves owners in turn, and within the owner whose turn it is takes its highest-priority job.
-- A priority orders one owner's own work; it does not let one owner jump ahead of another.
--
-- blocked_by: how many of the jobs this one depends on have not finished yet. A job with blocked_by > 0 is
-- QUEUED (the four states stay) but not claimable, and it is outside both claim indexes, so the claim stays a
-- read of an index head whatever the number of blocked jobs. When a dependency finishes, its dependents' count
-- goes down (the trigger below), and a job that reaches 0 enters the claim indexes and its owner joins the
-- line, exactly as a newly queued job does. When a dependency ends in FAILURE, its queued dependents end in
-- FAILURE at once ("dependency <id> failed"), and theirs in turn.
--
-- Adding columns with constant defaults rewrites nothing; the CHECK is NOT VALID (every existing row has the
-- default, and new rows are checked), so the migration does not scan jobs under its lock.
ALTER TABLE jobs
    ADD COLUMN priority smallint NOT NULL DEFAULT 0,
    ADD COLUMN blocked_by integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD CONSTRAINT jobs_priority_range CHECK (priority BETWEEN 0 AND 9) NOT VALID;
ALTER TABLE jobs ADD CONSTRAINT jobs_blocked_by_nonnegative CHECK (blocked_by >= 0) NOT VALID;

-- Who waits for whom. Only unfinished dependencies are recorded (a finished one blocks nothing), so a row here
-- means "job_id is waiting for depends_on"; rows stay after they are resolved, as history of the job's links.
-- The primary key leads with depends_on: the trigger looks up the dependents of a job that just ended.
CREATE TABLE job_dependencies (
    depends_on uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (depends_on, job_id)
);
CREATE INDEX job_dependencies_job_idx ON job_dependencies (job_id);

-- The claim's two indexes, now ordered by priority and without blocked jobs. jobs_queued_idx (001) stays for
-- the counts and the age of the queue (metrics, KEDA) and the measuring skip-locked claim.
CREATE INDEX jobs_claimable_idx ON jobs (priority DESC, created_at, id) WHERE status = 'QUEUED' AND blocked_by = 0;
CREATE INDEX jobs_owner_claimable_idx ON jobs (owner_id, priority DESC, created_at, id)
    WHERE status = 'QUEUED' AND blocked_by = 0;
DROP INDEX jobs_owner_queued_idx;

-- Puts an owner in line (006): the advisory lock, then a fresh look. Shared by the transition trigger and the
-- unblocking of a job.
CREATE FUNCTION queue_owner_join(p_owner bigint) RETURNS void LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1280397143, hashint8(p_owner));
    IF NOT EXISTS (SELECT 1 FROM queue_owners q WHERE q.owner_id = p_owner) THEN
        INSERT INTO queue_owners (owner_id, turn, joined) VALUES (p_owner, 0, nextval('queue_turns'));
    END IF;
    PERFORM pg_notify('lector_job_queued', '');
END;
$$;

-- The claim of 006 with the new order and indexes; everything else is as it was (see 006 for each step). The
-- owner-range trick of 006 (owner_id >= x AND owner_id <= x, first in ORDER BY) keeps the generic plan on
-- jobs_owner_claimable_idx.
CREATE OR REPLACE FUNCTION claim_job(p_worker text, p_lease_seconds float8, p_now timestamptz, p_skip_locked boolean)
RETURNS TABLE (job_id uuid, attempt integer, content_type text, options text)
LANGUAGE plpgsql
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
    line CURSOR FOR SELECT q.owner_id FROM queue_owners q ORDER BY q.turn, q.joined LIMIT 8;
BEGIN
    SET LOCAL synchronous_commit = off;
    IF p_skip_locked THEN
        SELECT j.id INTO v_id FROM jobs j
        WHERE j.status = 'QUEUED' AND j.blocked_by = 0 AND (j.not_before IS NULL OR j.not_before <= v_now)
        ORDER BY j.priority DESC, j.created_at, j.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
    ELSE
        LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
        SELECT j.id, j.owner_id INTO v_head, v_head_owner FROM jobs j
        WHERE j.status = 'QUEUED' AND j.blocked_by = 0 AND (j.not_before IS NULL OR j.not_before <= v_now)
        ORDER BY j.priority DESC, j.created_at, j.id
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
            CONTINUE WHEN v_candidate = ANY (v_seen);
            v_seen := v_seen || v_candidate;
            SELECT j.id INTO v_id FROM jobs j
            WHERE j.status = 'QUEUED' AND j.blocked_by = 0
              AND j.owner_id >= v_candidate AND j.owner_id <= v_candidate
              AND (j.not_before IS NULL OR j.not_before <= v_now)
            ORDER BY j.owner_id, j.priority DESC, j.created_at, j.id
            LIMIT 1;
            IF v_id IS NOT NULL THEN
                v_owner := v_candidate;
                EXIT;
            END IF;
            -- Nothing claimable: leave the line when nothing of the owner is waiting for its turn (blocked jobs
            -- do not count: they join again when they are unblocked), else go to the back.
            v_removable := pg_try_advisory_xact_lock(1280397143, hashint8(v_candidate));
            IF v_removable THEN
                PERFORM 1 FROM jobs j
                WHERE j.status = 'QUEUED' AND j.blocked_by = 0
                  AND j.owner_id >= v_candidate AND j.owner_id <= v_candidate
                ORDER BY j.owner_id, j.priority DESC, j.created_at, j.id
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

-- The transition trigger of 006, with the owner's joining moved into queue_owner_join, and a blocked job
-- (created with unfinished dependencies) not put in line: it joins when it is unblocked.
CREATE OR REPLACE FUNCTION job_transition_apply() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    current text;
    v_owner bigint;
    v_blocked integer;
BEGIN
    SELECT status, owner_id, blocked_by INTO current, v_owner, v_blocked FROM jobs WHERE id = NEW.job_id FOR UPDATE;
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
    IF NEW.status = 'QUEUED' AND v_blocked = 0 THEN
        PERFORM queue_owner_join(v_owner);
    END IF;
    RETURN NEW;
END;
$$;

-- A dependency ended. FINISHED: each queued dependent has one blocker fewer; one with none left joins the
-- queue. FAILURE: every queued job that waits for this one, directly or through others, ends FAILURE at once,
-- each naming the dependency it waited for ("dependency <id> failed").
--
-- The failure is one statement over the whole set, found with a recursive query and locked in id order first:
-- inserting each dependent's FAILURE from the trigger it fires would recurse once per level (a chain of a few
-- thousand jobs would exhaust the server's stack, and the end, cancel or rescue that started it would fail
-- for good), and locking level by level could deadlock two failures whose sets interleave. The FAILURE rows
-- inserted here fire this trigger again, one level down (pg_trigger_depth() > 1), where there is nothing left
-- to do: their dependents are in the same set.
--
-- No claim lock is needed: the claim lock serialises the writers that move a job out of QUEUED against the
-- claim, and a dependent of a job that has not finished is not claimable (blocked_by > 0, outside both claim
-- indexes). A cancel or delete of the same dependent locks its row too, and the second one finds it ended.
--
-- Named to fire after job_transitions_event and job_transitions_webhook (AFTER triggers fire in name order),
-- so a job's own event is announced before those of the jobs that fail with it.
CREATE FUNCTION job_dependency_resolve() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_dependent record;
    v_waiting uuid[];
BEGIN
    IF NEW.status = 'FINISHED' THEN
        FOR v_dependent IN
            SELECT j.id, j.owner_id, j.blocked_by FROM job_dependencies d JOIN jobs j ON j.id = d.job_id
            WHERE d.depends_on = NEW.job_id AND j.status = 'QUEUED' AND j.blocked_by > 0
            ORDER BY j.id
            FOR UPDATE OF j
        LOOP
            UPDATE jobs SET blocked_by = blocked_by - 1 WHERE id = v_dependent.id;
            IF v_dependent.blocked_by = 1 THEN
                PERFORM queue_owner_join(v_dependent.owner_id);
            END IF;
        END LOOP;
    ELSIF NEW.status = 'FAILURE' AND pg_trigger_depth() = 1 THEN
        -- Dependencies point to older jobs only (they must exist when a job is created), so the graph has no
        -- cycle and the recursion ends.
        WITH RECURSIVE waiting (job_id) AS (
            SELECT d.job_id FROM job_dependencies d WHERE d.depends_on = NEW.job_id
            UNION
            SELECT d.job_id FROM job_dependencies d JOIN waiting w ON d.depends_on = w.job_id
        )
        SELECT array_agg(w.job_id) INTO v_waiting FROM waiting w;
        IF v_waiting IS NULL THEN
            RETURN NULL;
        END IF;
        PERFORM 1 FROM jobs j WHERE j.id = ANY (v_waiting) AND j.status = 'QUEUED' ORDER BY j.id FOR UPDATE;
        INSERT INTO job_transitions (job_id, status, reason)
        SELECT j.id, 'FAILURE', 'dependency ' || (
                   SELECT min(d.depends_on::text) FROM job_dependencies d
                   WHERE d.job_id = j.id AND (d.depends_on = NEW.job_id OR d.depends_on = ANY (v_waiting))
               ) || ' failed'
        FROM jobs j WHERE j.id = ANY (v_waiting) AND j.status = 'QUEUED'
        ORDER BY j.id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_transitions_z_dependency AFTER INSERT ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION job_dependency_resolve();

-- create_job, v3: v2 (008) plus the priority and the dependencies. The dependencies must be jobs of the same
-- owner, not deleted; they are locked (FOR SHARE, in id order) while counted, so an end in flight is either
-- seen or waits for this transaction, and then finds the new dependent. A dependency that already failed fails
-- the job at once (it is still created, so the client gets its id and the reason). Raises LK002 naming the
-- first id that is no job of this owner.
CREATE FUNCTION create_job(
    p_id uuid, p_owner bigint, p_document_name text, p_content_type text, p_size bigint, p_sha256 bytea,
    p_options text, p_metadata text, p_idempotency_key text, p_fingerprint bytea, p_callback_url text,
    p_priority smallint, p_depends_on uuid[]
) RETURNS timestamptz
LANGUAGE plpgsql
SET lock_timeout = '2s'
AS $$
DECLARE
    v_created timestamptz;
    v_missing uuid;
    v_failed uuid;
    v_blocked integer := 0;
BEGIN
    IF coalesce(cardinality(p_depends_on), 0) > 0 THEN
        PERFORM 1 FROM jobs j WHERE j.id = ANY (p_depends_on) AND j.owner_id = p_owner ORDER BY j.id FOR SHARE;
        SELECT d INTO v_missing FROM unnest(p_depends_on) d
        WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d AND j.owner_id = p_owner AND j.deleted_at IS NULL)
        LIMIT 1;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'no job % of this user to depend on', v_missing USING ERRCODE = 'LK002';
        END IF;
        SELECT j.id INTO v_failed FROM jobs j WHERE j.id = ANY (p_depends_on) AND j.status = 'FAILURE' ORDER BY j.id LIMIT 1;
        SELECT count(*) INTO v_blocked FROM jobs j WHERE j.id = ANY (p_depends_on) AND j.status IS DISTINCT FROM 'FINISHED';
    END IF;
    INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, options, metadata, callback_url,
                      priority, blocked_by)
    VALUES (p_id, p_owner, p_document_name, p_content_type, p_size, p_sha256, p_options::jsonb, p_metadata::jsonb,
            p_callback_url, p_priority, CASE WHEN v_failed IS NULL THEN v_blocked ELSE 0 END)
    RETURNING created_at INTO v_created;
    IF v_failed IS NULL AND v_blocked > 0 THEN
        INSERT INTO job_dependencies (depends_on, job_id)
        SELECT DISTINCT j.id, p_id FROM jobs j WHERE j.id = ANY (p_depends_on) AND j.status IS DISTINCT FROM 'FINISHED';
    END IF;
    INSERT INTO job_transitions (job_id, status) VALUES (p_id, 'QUEUED');
    IF v_failed IS NOT NULL THEN
        INSERT INTO job_transitions (job_id, status, reason) VALUES (p_id, 'FAILURE', 'dependency ' || v_failed || ' failed');
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (user_id, key, job_id, request_sha256)
        VALUES (p_owner, p_idempotency_key, p_id, p_fingerprint)
        ON CONFLICT (user_id, key) DO UPDATE
            SET job_id = EXCLUDED.job_id, request_sha256 = EXCLUDED.request_sha256, created_at = now()
            WHERE idempotency_keys.created_at < now() - interval '24 hours';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key already in use' USING ERRCODE = 'LK001';
        END IF;
    END IF;
    RETURN v_created;
END;
$$;
