-- Live job events (SSE, WebSocket) and page progress.
--
-- Every transition is announced on one channel, lector_job_events, with what a subscriber shows: the
-- transition's id (the event id a client resumes from), the job, its owner (for GET /v1/events), the status,
-- the time and the reason. An API process LISTENs once and fans the events out to its subscribers; no
-- subscriber polls. A trigger of its own, AFTER the row is in, so that job_transition_apply (which later
-- migrations may replace) stays as it is; a NOTIFY is delivered at commit, so a rolled-back transition is
-- never announced. Payload: 't <transition id> <job id> <owner id> <STATUS> <epoch ms> <reason>'; the reason
-- is cut to 2,000 characters (NOTIFY payloads are limited to 8,000 bytes).
CREATE FUNCTION job_transition_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_owner bigint;
BEGIN
    SELECT owner_id INTO v_owner FROM jobs WHERE id = NEW.job_id;
    -- A job that goes back to the queue or starts a new attempt has no progress yet (the row is already
    -- locked by this transaction; nothing is written when there is nothing to clear).
    IF NEW.status IN ('QUEUED', 'IN_PROGRESS') THEN
        UPDATE jobs SET pages_done = NULL, pages_total = NULL WHERE id = NEW.job_id AND pages_done IS NOT NULL;
    END IF;
    PERFORM pg_notify('lector_job_events',
        't ' || NEW.id || ' ' || NEW.job_id || ' ' || v_owner || ' ' || NEW.status || ' '
        || (extract(epoch FROM NEW.at) * 1000)::bigint || ' ' || left(coalesce(NEW.reason, ''), 2000));
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_transitions_event AFTER INSERT ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION job_transition_event();

-- Page progress of the running attempt: scheduling state, mutable, outside the append-only log (like
-- attempts and not_before). Kept on the job so that GET /v1/jobs/{id} shows it and a late subscriber starts
-- from it; cleared when the job is queued again or a new attempt starts (job_transition_event).
ALTER TABLE jobs ADD COLUMN pages_done integer, ADD COLUMN pages_total integer;

-- Records progress for the attempt that holds the lease, and announces it: 'p <job id> <owner id> <done>
-- <total>'. A stale attempt (its lease gone) writes nothing and gets false. Workers call it at most about
-- once a second per job.
CREATE FUNCTION job_progress(p_job uuid, p_worker text, p_attempt integer, p_done integer, p_total integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_owner bigint;
BEGIN
    -- FOR SHARE: an end holding the lease row is waited for, and then the lease is gone (nothing written after
    -- the final state); the lock order, lease then job, is the end's.
    PERFORM 1 FROM job_leases WHERE job_id = p_job AND worker = p_worker AND attempt = p_attempt FOR SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE jobs SET pages_done = p_done, pages_total = p_total WHERE id = p_job RETURNING owner_id INTO v_owner;
    PERFORM pg_notify('lector_job_events', 'p ' || p_job || ' ' || v_owner || ' ' || p_done || ' ' || p_total);
    RETURN true;
END;
$$;
