-- Lector schema, version 1. Migrations are append-only: never edit a file that has shipped; add the next number.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- An API key is "lk_<prefix>_<secret>". The prefix finds the row; only the SHA-256 of the secret is stored,
-- and the server compares digests in constant time.
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users(id),
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE jobs (
    id             uuid PRIMARY KEY,
    owner_id       bigint NOT NULL REFERENCES users(id),
    document_name  text NOT NULL,
    content_type   text NOT NULL,
    size_bytes     bigint NOT NULL CHECK (size_bytes >= 0),
    sha256         bytea NOT NULL CHECK (length(sha256) = 32),
    options        jsonb NOT NULL DEFAULT '{}',
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Derived, never written by application code: the status of the latest row in job_transitions, kept
    -- by the trigger below in the same transaction as the insert. NULL only inside the transaction that
    -- creates the job, before its first transition.
    status         text CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'FINISHED', 'FAILURE'))
);

-- The claim reads this index only: it holds the queued jobs, so finding the oldest one costs the same
-- with ten finished jobs or ten million.
CREATE INDEX jobs_queued_idx ON jobs (created_at, id) WHERE status = 'QUEUED';
CREATE INDEX jobs_owner_idx ON jobs (owner_id, created_at);

-- The append-only status log. A job's status is the status of its latest row.
CREATE TABLE job_transitions (
    id      bigserial PRIMARY KEY,
    job_id  uuid NOT NULL REFERENCES jobs(id),
    status  text NOT NULL CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'FINISHED', 'FAILURE')),
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker  text,
    reason  text
);
CREATE INDEX job_transitions_job_idx ON job_transitions (job_id, id);

-- The queue's mutex. Claimers take LOCK TABLE job_claim_lock IN EXCLUSIVE MODE: it serialises claimers
-- with each other and with nothing else (submits, finishes, status reads and autovacuum on jobs never wait
-- for it). It holds no rows. See docs/design/queue.md, "The claim".
CREATE TABLE job_claim_lock ();

-- Every transition goes through this trigger: it checks that the move is legal, keeps jobs.status, and
-- notifies listeners. Locking the job row serialises concurrent transitions of one job.
CREATE FUNCTION job_transition_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF NEW.status = 'QUEUED' THEN
        PERFORM pg_notify('lector_job_queued', '');
    ELSIF NEW.status IN ('FINISHED', 'FAILURE') THEN
        PERFORM pg_notify('lector_job_ended', NEW.job_id::text);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER job_transitions_apply BEFORE INSERT ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION job_transition_apply();

-- History is never rewritten.
CREATE FUNCTION job_transitions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job_transitions is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER job_transitions_no_rewrite BEFORE UPDATE OR DELETE ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION job_transitions_append_only();
CREATE TRIGGER job_transitions_no_truncate BEFORE TRUNCATE ON job_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION job_transitions_append_only();
