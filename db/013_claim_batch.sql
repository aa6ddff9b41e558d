-- Several claims in one call: a worker with k idle slots claims up to k jobs in one transaction and one round trip
-- (issue 17, "Fewer transactions per job"). See docs/design/queue.md, "Batched claims".
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
    IF coalesce(array_length(p_workers, 1), 0) > 256 THEN
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
