-- The claim as one server-side function: one round trip instead of six (BEGIN, LOCK, INSERT, UPDATE,
-- INSERT, COMMIT), so the queue's table lock is held for microseconds of server work instead of several
-- network round trips. Measured in BENCHMARKS.md (P2).
--
-- synchronous_commit is off for the claim only: if the server crashes within the WAL writer delay after a
-- claim, the claim is forgotten and the job is QUEUED again; the worker that thought it held it is fenced
-- (its lease row does not exist), so nothing is lost or recorded twice, only redone. Submits and ends keep
-- synchronous commits.
CREATE FUNCTION claim_job(p_worker text, p_lease_seconds float8, p_now timestamptz, p_skip_locked boolean)
RETURNS TABLE (job_id uuid, attempt integer, content_type text, options text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_id uuid;
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
        SELECT j.id INTO v_id FROM jobs j
        WHERE j.status = 'QUEUED' AND (j.not_before IS NULL OR j.not_before <= v_now)
        ORDER BY j.created_at, j.id
        LIMIT 1;
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
