-- Several claims, and several ends, in one call: a worker with k idle slots claims up to k jobs in one transaction
-- and one round trip, and writes the ends that are ready together in one transaction (issue 17, "Fewer
-- transactions per job"). See docs/design/queue.md, "Batched claims" and "Batched ends".
--
-- Each slot keeps its own lease (the worker name of the slot), so fencing, renewal, rescue and the end are
-- unchanged: a batch is k claims made back to back by claim_job under the one table lock, each by the same rules
-- (owners take turns, priority, then the oldest; retry times; dependencies), in the order of p_workers. The lock
-- is taken once (a second LOCK TABLE in the same transaction is free) and held until the commit, as for one
-- claim: a batch holds it k times as long, and nothing else happens under it. Fewer rows than workers come back
-- when fewer jobs are claimable; the first worker without a job ends the batch.
CREATE FUNCTION claim_jobs(p_workers text[], p_lease_seconds float8, p_now timestamptz, p_skip_locked boolean)
RETURNS TABLE (worker text, job_id uuid, attempt integer, content_type text, options text)
LANGUAGE plpgsql
AS $$
DECLARE
    v_worker text;
    v_claim record;
BEGIN
    IF coalesce(cardinality(p_workers), 0) > 256 THEN
        RAISE EXCEPTION 'claim_jobs takes at most 256 workers' USING ERRCODE = '22023';
    END IF;
    FOREACH v_worker IN ARRAY coalesce(p_workers, '{}') LOOP
        SELECT c.job_id, c.attempt, c.content_type, c.options INTO v_claim
        FROM claim_job(v_worker, p_lease_seconds, p_now, p_skip_locked) c;
        EXIT WHEN v_claim.job_id IS NULL;
        worker := v_worker;
        job_id := v_claim.job_id;
        attempt := v_claim.attempt;
        content_type := v_claim.content_type;
        options := v_claim.options;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- The ends of one batch, after JobStore.endBatch has locked their leases and put their files in place: each as
-- end_job (with the final page count and engine, as the single end writes them), in job order, each in its own
-- subtransaction (the EXCEPTION block), so that one end that fails (an invalid value, a deadlock with another
-- writer of a dependent job) is rolled back alone and reported, and the others are written. The jobs' rows are
-- locked first, all in id order, as cancel_batch and create_job lock several jobs, so those never wait on a
-- batch in a cycle. One row per job: ended (false when the lease is gone) and the failure, if any.
CREATE FUNCTION end_jobs(p_ends jsonb)
RETURNS TABLE (job_id uuid, ended boolean, failure text)
LANGUAGE plpgsql
AS $$
DECLARE
    v_end record;
BEGIN
    -- p_ends: [{"job", "worker", "attempt", "status", "reason", "pages", "engine"}], reason, pages and engine
    -- may be null.
    PERFORM 1 FROM jobs j
    WHERE j.id IN (SELECT (e ->> 'job')::uuid FROM jsonb_array_elements(p_ends) e)
    ORDER BY j.id FOR UPDATE;
    FOR v_end IN
        SELECT * FROM jsonb_to_recordset(p_ends)
            AS u(job uuid, worker text, attempt integer, status text, reason text, pages integer, engine text)
        ORDER BY u.job
    LOOP
        job_id := v_end.job;
        failure := NULL;
        BEGIN
            IF v_end.pages IS NOT NULL OR v_end.engine IS NOT NULL THEN
                UPDATE jobs j SET pages_done = coalesce(v_end.pages, j.pages_done),
                    pages_total = coalesce(v_end.pages, j.pages_total),
                    engine_version = coalesce(v_end.engine, j.engine_version)
                WHERE j.id = v_end.job;
            END IF;
            ended := end_job(v_end.job, v_end.worker, v_end.attempt, v_end.status, v_end.reason);
        EXCEPTION WHEN OTHERS THEN
            ended := false;
            failure := SQLSTATE || ': ' || SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;
