-- The lector_job_ended notification now carries the status: '<job id> FINISHED' or '<job id> FAILURE', so that
-- an API process can answer its long-poll waiters for a finished job without a query each (BENCHMARKS.md, P5).
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
