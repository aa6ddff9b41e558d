-- Cancelling a job (POST /v1/jobs/{id}/cancel), re-reading one with other options (POST /v1/jobs/{id}/rerun) and
-- deleting one (DELETE /v1/jobs/{id}). See docs/design/queue.md, "Cancel, re-OCR, delete".
--
-- A queued job ends at once, FAILURE "cancelled". That moves a job out of QUEUED, so, like the claim, it happens
-- under LOCK TABLE job_claim_lock IN EXCLUSIVE MODE: a cancel and a claim of the same job are serialised, and
-- whichever comes second sees the other's commit (the claim no longer finds the job QUEUED; the cancel finds it
-- IN_PROGRESS and asks its worker instead). Lock order is the claim's: the table lock, then the job's row.
--
-- A running job cannot be ended by the API: its worker holds the lease, and every end is fenced by it. The
-- request is recorded (jobs.cancel_requested_at) and announced on lector_job_cancel with the job's id; the
-- worker that runs it cancels the attempt's OCR and ends the job FAILURE "cancelled" with its lease. A worker
-- that missed the NOTIFY finds the request at its next lease renewal.
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;

-- Returns 'cancelled' (it was QUEUED and is now FAILURE "cancelled"), 'requested' (it is IN_PROGRESS: the request
-- is recorded and announced), 'ended' (FINISHED or FAILURE already: nothing written), 'gone' (deleted), or NULL
-- (no such job of this owner).
CREATE FUNCTION cancel_job(p_job uuid, p_owner bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_deleted timestamptz;
BEGIN
    LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
    SELECT status, deleted_at INTO v_status, v_deleted FROM jobs WHERE id = p_job AND owner_id = p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_deleted IS NOT NULL THEN
        RETURN 'gone';  -- deleted (below)
    END IF;
    IF v_status = 'QUEUED' THEN
        UPDATE jobs SET cancel_requested_at = now() WHERE id = p_job;
        INSERT INTO job_transitions (job_id, status, reason) VALUES (p_job, 'FAILURE', 'cancelled');
        RETURN 'cancelled';
    ELSIF v_status = 'IN_PROGRESS' THEN
        UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()) WHERE id = p_job;
        PERFORM pg_notify('lector_job_cancel', p_job::text);
        RETURN 'requested';
    END IF;
    RETURN 'ended';
END;
$$;

-- A job whose cancel was requested never goes back to the queue: a requeue (a worker's retry, storage full, the
-- graceful hand-back) or a rescue (its worker was lost) of it becomes FAILURE "cancelled" instead. Triggers of
-- one event fire in the order of their names, so this one ('job_transitions_a_cancel') runs before
-- job_transitions_apply, which then sees the transition as it is meant. It locks the job's row first, as the
-- apply trigger would: a cancel_job that committed meanwhile is seen, and one that comes later waits for this
-- transaction and then finds the job QUEUED or ended.
CREATE FUNCTION job_transition_cancelled() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_requested timestamptz;
BEGIN
    IF NEW.status <> 'QUEUED' THEN
        RETURN NEW;
    END IF;
    SELECT status, cancel_requested_at INTO v_status, v_requested FROM jobs WHERE id = NEW.job_id FOR UPDATE;
    IF v_status = 'IN_PROGRESS' AND v_requested IS NOT NULL THEN
        NEW.status := 'FAILURE';
        NEW.reason := 'cancelled';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER job_transitions_a_cancel BEFORE INSERT ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION job_transition_cancelled();

-- Re-OCR: a new job made from a job's stored document with new options, linked to it. One statement, like
-- create_job: the row (document, metadata and callback URL copied from the first job, the callback URL replaced
-- when the request names one) and its QUEUED transition. NULL when the first job does not exist or belongs to
-- someone else: nothing is written. The API has already put the new job's folder in place (a hard link of the
-- document), as for a submit.
ALTER TABLE jobs ADD COLUMN rerun_of uuid REFERENCES jobs(id);

CREATE FUNCTION rerun_job(p_id uuid, p_source uuid, p_owner bigint, p_options text, p_callback_url text)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_created timestamptz;
BEGIN
    INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, options, metadata, callback_url, rerun_of)
    SELECT p_id, j.owner_id, j.document_name, j.content_type, j.size_bytes, j.sha256, p_options::jsonb, j.metadata,
           coalesce(p_callback_url, j.callback_url), j.id
    FROM jobs j WHERE j.id = p_source AND j.owner_id = p_owner AND j.deleted_at IS NULL  -- its document is gone
    RETURNING created_at INTO v_created;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO job_transitions (job_id, status) VALUES (p_id, 'QUEUED');
    RETURN v_created;
END;
$$;

-- Deleting a job (DELETE /v1/jobs/{id}). The row and its transitions stay, so that the job's existence, owner,
-- times and outcome remain on record (and the append-only log is never rewritten); what the client gave us is
-- cleared: the document's name, the options, the metadata, the callback URL. The API then removes the folder.
-- From then on every job route answers 410.
--
-- A running job is refused ('running'; the API answers 409 job_running): its worker holds the lease and would
-- put result files into the folder; the client cancels it first. A queued job is cancelled in the same
-- transaction, under the claim's table lock like cancel_job, so it can never be claimed once deleted.
-- Returns 'deleted', 'running', 'gone' (deleted before) or NULL (no such job of this owner).
ALTER TABLE jobs ADD COLUMN deleted_at timestamptz;

CREATE FUNCTION delete_job(p_job uuid, p_owner bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_deleted timestamptz;
BEGIN
    LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
    SELECT status, deleted_at INTO v_status, v_deleted FROM jobs WHERE id = p_job AND owner_id = p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_deleted IS NOT NULL THEN
        RETURN 'gone';
    END IF;
    IF v_status = 'IN_PROGRESS' THEN
        RETURN 'running';
    END IF;
    IF v_status = 'QUEUED' THEN
        UPDATE jobs SET cancel_requested_at = now() WHERE id = p_job;
        INSERT INTO job_transitions (job_id, status, reason) VALUES (p_job, 'FAILURE', 'cancelled');
    END IF;
    UPDATE jobs SET deleted_at = now(), document_name = '', options = '{}', metadata = '{}', callback_url = NULL
    WHERE id = p_job;
    RETURN 'deleted';
END;
$$;

-- Retention (LECTOR_RETENTION_DAYS): ended jobs not yet deleted, oldest first, so that a pass reads the head of a
-- small index instead of the whole history. Partial like jobs_queued_idx: a job enters it when it ends and leaves
-- it when it is deleted.
CREATE INDEX jobs_retention_idx ON jobs (created_at) WHERE deleted_at IS NULL AND status IN ('FINISHED', 'FAILURE');
