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
-- FINISHED with the reason naming the source, both by the pseudo-worker 'reuse'. The source must still be a
-- FINISHED, undeleted job of the same owner: its row is locked FOR SHARE until this transaction ends, so a delete
-- of it (or retention) waits, and since a job's folder is removed only after its delete commits, the copy the
-- caller made was made from the whole folder. Otherwise nothing is written and the result is false: the job stays
-- QUEUED and a worker reads it (whatever was copied is replaced by its results).
--
-- No claim lock, unlike every other writer that moves a job out of QUEUED: the job was created by this same
-- transaction, so no claim, cancel or delete can see it before it is FINISHED; the lock would only make every
-- claim of the fleet wait for this submit's commit. The source's engine identity carries over, so a reused
-- result can be reused again; its page count too (set after the IN_PROGRESS transition, which clears progress).
CREATE FUNCTION finish_reused(p_job uuid, p_source uuid, p_engine text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_owner bigint;
    v_pages integer;
BEGIN
    SELECT status, owner_id INTO v_status, v_owner FROM jobs WHERE id = p_job FOR UPDATE;
    IF v_status IS DISTINCT FROM 'QUEUED' THEN
        RETURN false;
    END IF;
    SELECT pages_total INTO v_pages FROM jobs
    WHERE id = p_source AND owner_id = v_owner AND status = 'FINISHED' AND deleted_at IS NULL
    FOR SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_transitions (job_id, status, worker) VALUES (p_job, 'IN_PROGRESS', 'reuse');
    UPDATE jobs SET reused_from = p_source, engine_version = p_engine, pages_done = v_pages, pages_total = v_pages
    WHERE id = p_job;
    INSERT INTO job_transitions (job_id, status, worker, reason)
    VALUES (p_job, 'FINISHED', 'reuse', 'reused the results of job ' || p_source);
    RETURN true;
END;
$$;

-- Creates a batch and its jobs in one statement (one round trip however many jobs): the batch row, each job through
-- create_job (so every rule of a submit holds: dependencies, the QUEUED transition and its notifications), their
-- positions, and the reuse of each job that names a source (p_reuse_sources[i], '' for none). Every job of a
-- transaction gets the same created_at (now()); a microsecond per position keeps the claim, which orders by
-- priority, created_at and id, in the order of the request. Returns the batch's creation time.
CREATE FUNCTION create_batch(
    p_batch uuid, p_owner bigint, p_ids uuid[], p_names text[], p_types text[], p_sizes bigint[], p_sha256_hex text[],
    p_options text, p_metadata text, p_callback_url text, p_priority smallint, p_depends_on uuid[],
    p_reuse_sources text[], p_reuse_engines text[]
) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_created timestamptz;
    i integer;
BEGIN
    INSERT INTO batches (id, owner_id, job_count) VALUES (p_batch, p_owner, cardinality(p_ids))
    RETURNING created_at INTO v_created;
    FOR i IN 1 .. cardinality(p_ids) LOOP
        PERFORM create_job(p_ids[i], p_owner, p_names[i], p_types[i], p_sizes[i], decode(p_sha256_hex[i], 'hex'),
                           p_options, p_metadata, NULL, NULL, p_callback_url, p_priority, p_depends_on);
    END LOOP;
    UPDATE jobs j SET batch_id = p_batch, batch_position = p.position,
        created_at = j.created_at + (p.position - 1) * interval '1 microsecond'
    FROM unnest(p_ids) WITH ORDINALITY AS p(job_id, position)
    WHERE j.id = p.job_id;
    FOR i IN 1 .. cardinality(p_ids) LOOP
        IF coalesce(p_reuse_sources[i], '') <> '' THEN
            PERFORM finish_reused(p_ids[i], p_reuse_sources[i]::uuid, p_reuse_engines[i]);
        END IF;
    END LOOP;
    RETURN v_created;
END;
$$;

-- Cancels every job of a batch that has not ended, as cancel_job does for one, under the claim's lock (taken once;
-- two batch cancels, or a batch cancel and a claim, are serialised by it), the batch's jobs taken in id order. A
-- cancelled job's dependents fail with it (the dependency trigger locks them as it goes), so a worker ending one of
-- their other dependencies at the same moment can deadlock with this; PostgreSQL then ends one of the two after a
-- second (the API answers 503, the worker retries its end). Returns one row per job that was queued or running:
-- 'cancelled' or 'requested'; no rows when there is no such batch of this owner.
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
