-- Batches (POST /v1/batches) and reuse of identical work. See docs/design/queue.md, "Batches" and "Reuse".

-- A batch is a set of jobs submitted in one request with shared options. It holds no state of its own: its
-- progress is the count of its jobs by status (jobs_batch_idx), so nothing has to be kept in step.
CREATE TABLE batches (
    id          uuid PRIMARY KEY,
    owner_id    bigint NOT NULL REFERENCES users(id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    job_count   integer NOT NULL CHECK (job_count >= 1)
);
CREATE INDEX batches_owner_idx ON batches (owner_id, created_at);

ALTER TABLE jobs ADD COLUMN batch_id uuid REFERENCES batches(id);
-- A job's place in its batch (1-based, the order of the request): the archive and GET /v1/batches/{id} list
-- jobs in it.
ALTER TABLE jobs ADD COLUMN batch_position integer;
CREATE INDEX jobs_batch_idx ON jobs (batch_id, batch_position) WHERE batch_id IS NOT NULL;

-- Reuse. A FINISHED job records the engine that made its results (the worker's engine identity: Tesseract's
-- version, Lector's pipeline revision and a digest of the model files). A new job of the same owner with the
-- same document (sha256) and the same options is finished at once with a copy of such a job's results, when
-- the engine that made them is the fleet's current one: the identity a worker announced last
-- (engine_versions). Only finished, undeleted jobs are indexed, so the look-up stays one index probe.
ALTER TABLE jobs ADD COLUMN engine_version text CHECK (engine_version IS NULL OR length(engine_version) <= 500);
ALTER TABLE jobs ADD COLUMN reused_from uuid;
CREATE INDEX jobs_reuse_idx ON jobs (owner_id, sha256, created_at DESC)
    WHERE status = 'FINISHED' AND deleted_at IS NULL AND engine_version IS NOT NULL;

-- Every worker announces its engine identity when it starts; the newest announcement is the fleet's current
-- engine. During a rolling upgrade the new identity wins as soon as one new worker started, so results of
-- the old engine stop being reused; rolling back re-announces the old identity.
CREATE TABLE engine_versions (
    version       text PRIMARY KEY CHECK (length(version) <= 500),
    announced_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX engine_versions_announced_idx ON engine_versions (announced_at);

-- Ends a job just created in the caller's transaction with the results copied from p_source: IN_PROGRESS, then
-- FINISHED with the reason naming the source, both by the pseudo-worker 'reuse'. It moves the job out of
-- QUEUED, so it takes the claim's table lock, as every such writer does (no claim can see the job before this
-- transaction commits anyway). The source's engine identity carries over, so a reused result can be reused
-- again. Returns false when the job is not QUEUED (nothing written).
CREATE FUNCTION finish_reused(p_job uuid, p_source uuid, p_engine text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
    SELECT status INTO v_status FROM jobs WHERE id = p_job FOR UPDATE;
    IF v_status IS DISTINCT FROM 'QUEUED' THEN
        RETURN false;
    END IF;
    UPDATE jobs SET reused_from = p_source, engine_version = p_engine,
        pages_done = (SELECT pages_total FROM jobs WHERE id = p_source),
        pages_total = (SELECT pages_total FROM jobs WHERE id = p_source)
    WHERE id = p_job;
    INSERT INTO job_transitions (job_id, status, worker) VALUES (p_job, 'IN_PROGRESS', 'reuse');
    INSERT INTO job_transitions (job_id, status, worker, reason)
    VALUES (p_job, 'FINISHED', 'reuse', 'reused the results of job ' || p_source);
    RETURN true;
END;
$$;

-- Cancels every job of a batch that has not ended, as cancel_job does for one (it takes the claim's lock and
-- locks the rows in id order, so two batch cancels, or a batch cancel and a claim, never deadlock). Returns
-- one row per job that was queued or running: 'cancelled' or 'requested'. NULL rows: no such batch of this
-- owner.
CREATE FUNCTION cancel_batch(p_batch uuid, p_owner bigint) RETURNS TABLE (job_id uuid, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_job uuid;
    v_outcome text;
BEGIN
    PERFORM 1 FROM batches WHERE id = p_batch AND owner_id = p_owner;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
    FOR v_job IN
        SELECT id FROM jobs WHERE batch_id = p_batch AND status IN ('QUEUED', 'IN_PROGRESS') AND deleted_at IS NULL
        ORDER BY id
    LOOP
        v_outcome := cancel_job(v_job, p_owner);
        IF v_outcome IN ('cancelled', 'requested') THEN
            job_id := v_job;
            outcome := v_outcome;
            RETURN NEXT;
        END IF;
    END LOOP;
END;
$$;
