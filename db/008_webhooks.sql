-- Signed webhooks: when a job with a callback URL ends, Lector POSTs its status to that URL, signed the Standard
-- Webhooks way with its owner's secret. See docs/design/api.md, "Webhooks".

-- The owner's signing secret, "whsec_" and the base64 of 32 random bytes. Stored as it is, not hashed: Lector
-- must be able to sign with it (HMAC needs the key itself). `lector keys webhook-secret --user NAME` creates or
-- replaces it and prints it once.
ALTER TABLE users ADD COLUMN webhook_secret text
    CHECK (webhook_secret IS NULL OR webhook_secret ~ '^whsec_[A-Za-z0-9+/]{43}=$');

-- A key's default callback URL, used by submits with that key that name none (`lector keys webhook`).
ALTER TABLE api_keys ADD COLUMN webhook_url text CHECK (webhook_url IS NULL OR length(webhook_url) <= 2048);

-- The job's callback URL (the submit's `callbackUrl`, or its key's default at submit time). Not part of
-- `options`: those are the engine's, and the worker hands them to it.
ALTER TABLE jobs ADD COLUMN callback_url text CHECK (callback_url IS NULL OR length(callback_url) <= 2048);

-- The outbox. One row per ending of a job with a callback URL, written by the trigger below in the transaction
-- that appends the ending transition, so no ending is ever without its delivery. Its id is the `webhook-id`
-- header, the same on every attempt, so receivers can drop duplicates (delivery is at least once).
--
-- next_attempt_at is both the retry time and the claim: a delivery worker moves it past the attempt's timeout
-- when it takes the row (FOR UPDATE SKIP LOCKED, one short statement), and sets it to the next retry when it
-- records the attempt. A worker that dies mid-attempt leaves the row due again once that time passes.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id           uuid NOT NULL REFERENCES jobs(id),
    url              text NOT NULL,
    -- What is reported: the ending transition's status and reason, fixed when the row is written, so every
    -- attempt sends the same body.
    status           text NOT NULL CHECK (status IN ('FINISHED', 'FAILURE')),
    reason           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    delivered_at     timestamptz,
    gave_up_at       timestamptz
);
-- Only deliveries still to be made: the claim reads the head of a small index, whatever the history.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id, created_at);

-- Every attempt: when, how long, and the HTTP status or the error (refused address, timeout, connection).
CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries(id),
    attempt      integer NOT NULL CHECK (attempt >= 1),
    at           timestamptz NOT NULL,
    duration_ms  double precision NOT NULL CHECK (duration_ms >= 0),
    status_code  integer,
    error        text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- A submit with a callback URL: create_job (005) with one more argument, so the job, its QUEUED transition, the
-- idempotency key and the URL are still one statement. A new overload rather than a changed function: the
-- prepared statement lector_create_job_v1 of older builds keeps working during a rolling deploy.
CREATE FUNCTION create_job(
    p_id uuid, p_owner bigint, p_document_name text, p_content_type text, p_size bigint, p_sha256 bytea,
    p_options text, p_metadata text, p_idempotency_key text, p_fingerprint bytea, p_callback_url text
) RETURNS timestamptz
LANGUAGE plpgsql
SET lock_timeout = '2s'
AS $$
DECLARE
    v_created timestamptz;
BEGIN
    INSERT INTO jobs (id, owner_id, document_name, content_type, size_bytes, sha256, options, metadata, callback_url)
    VALUES (p_id, p_owner, p_document_name, p_content_type, p_size, p_sha256, p_options::jsonb, p_metadata::jsonb,
            p_callback_url)
    RETURNING created_at INTO v_created;
    INSERT INTO job_transitions (job_id, status) VALUES (p_id, 'QUEUED');
    IF p_idempotency_key IS NOT NULL THEN
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

-- The outbox row, from the one place every ending passes through: an insert of FINISHED or FAILURE into
-- job_transitions (end_job, the rescuer's failure at the attempt limit, a failure straight from QUEUED). A
-- trigger of its own, AFTER the row is in, so job_transition_apply (006) is left as it is; it runs in the same
-- transaction, and a failure here rolls the ending back. Jobs without a callback URL cost one primary-key read
-- of the row job_transition_apply has just locked and updated.
CREATE FUNCTION job_webhook_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, url, status, reason)
    SELECT j.id, j.callback_url, NEW.status, NEW.reason
    FROM jobs j WHERE j.id = NEW.job_id AND j.callback_url IS NOT NULL;
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_transitions_webhook AFTER INSERT ON job_transitions
    FOR EACH ROW WHEN (NEW.status IN ('FINISHED', 'FAILURE'))
    EXECUTE FUNCTION job_webhook_enqueue();
