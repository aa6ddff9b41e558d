-- Creating and ending a job as server-side functions, like the claim (004): the queue's per-job cost was
-- mostly round trips and statements parsed afresh (BENCHMARKS.md, P3). PL/pgSQL keeps the plans of the
-- statements inside a function for the life of the session, and the application calls each function through
-- a named prepared statement, so neither is parsed or planned again after a connection's first job.

-- The job row, its QUEUED transition and, when given, the idempotency key, in one statement (so in one
-- transaction). A key that a live earlier request holds aborts the whole statement with SQLSTATE LK001:
-- nothing is created, and the application answers with the earlier job.
CREATE FUNCTION create_job(
    p_id uuid, p_owner bigint, p_document_name text, p_content_type text, p_size bigint, p_sha256 bytea,
    p_options text, p_metadata text, p_idempotency_key text, p_fingerprint bytea
) RETURNS timestamptz
LANGUAGE plpgsql
-- Waiting on a concurrent request's key must end well before the API's deadline, with a clean rollback. A
-- setting of the function, so it holds for this call only, whatever transaction the call runs in.
SET lock_timeout = '2s'
AS $$
DECLARE
    v_created timestamptz;
BEGIN
    INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, options, metadata)
    VALUES (p_id, p_owner, p_document_name, p_content_type, p_size, p_sha256, p_options::jsonb, p_metadata::jsonb)
    RETURNING created_at INTO v_created;
    INSERT INTO job_transitions (job_id, status) VALUES (p_id, 'QUEUED');
    IF p_idempotency_key IS NOT NULL THEN
        -- Takes the key, or an expired use of it; a live use by a concurrent request wins.
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

-- Appends FINISHED or FAILURE for the attempt that holds the lease, or returns false (and writes nothing) when
-- that attempt no longer holds it. The lease row stays locked until the caller's transaction ends, so a worker
-- can move its result files into place after this call and before COMMIT, fenced against a newer attempt
-- (the transition trigger also deletes the lease row, in the same transaction).
CREATE FUNCTION end_job(p_job uuid, p_worker text, p_attempt integer, p_status text, p_reason text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_status NOT IN ('FINISHED', 'FAILURE') THEN
        RAISE EXCEPTION 'end_job takes FINISHED or FAILURE, not %', p_status USING ERRCODE = 'check_violation';
    END IF;
    PERFORM 1 FROM job_leases
    WHERE job_id = p_job AND worker = p_worker AND attempt = p_attempt
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_transitions (job_id, status, worker, reason) VALUES (p_job, p_status, p_worker, p_reason);
    RETURN true;
END;
$$;
