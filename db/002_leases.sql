-- Leases, attempts and retry times: scheduling state, mutable, kept outside the append-only transition log.

-- attempts: claims so far (a graceful hand-back gives its attempt back). not_before: a QUEUED job is not
-- claimable before this time (retry backoff); NULL means now.
ALTER TABLE jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN not_before timestamptz;

-- One row per IN_PROGRESS job: who holds it, which attempt, until when. The worker renews expires_at while it
-- works; the rescuer requeues (or fails) jobs whose lease expired. A worker may end a job only while it holds
-- the lease row of its own attempt (fencing).
CREATE TABLE job_leases (
    job_id      uuid PRIMARY KEY REFERENCES jobs(id),
    worker      text NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    claimed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX job_leases_expiry_idx ON job_leases (expires_at);

-- Jobs IN_PROGRESS when this migration runs were claimed without a lease: give them an expired one, so that
-- the rescuer requeues them unless their worker ends them first (old workers end without a lease check).
UPDATE jobs SET attempts = 1 WHERE status = 'IN_PROGRESS';
INSERT INTO job_leases (job_id, worker, attempt, claimed_at, expires_at)
SELECT j.id, coalesce(t.worker, 'unknown'), 1, t.at, now()
FROM jobs j
JOIN LATERAL (SELECT worker, at FROM job_transitions WHERE job_id = j.id ORDER BY id DESC LIMIT 1) t ON true
WHERE j.status = 'IN_PROGRESS';

-- The transition trigger now also drops the lease when a job leaves IN_PROGRESS, in the same transaction,
-- and the lector_job_ended notification carries the status ('<job id> FINISHED' or '<job id> FAILURE'), so
-- that an API process can answer long-poll waiters of a finished job without a query each (BENCHMARKS.md, P5).
CREATE OR REPLACE FUNCTION job_transition_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current text;
BEGIN
    SELECT status INTO current FROM jobs WHERE id = NEW.job_id FOR UPDATE;
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
        PERFORM pg_notify('lector_job_queued', '');
    ELSIF NEW.status IN ('FINISHED', 'FAILURE') THEN
        PERFORM pg_notify('lector_job_ended', NEW.job_id::text || ' ' || NEW.status);
    END IF;
    RETURN NEW;
END;
$$;
