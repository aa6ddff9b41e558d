-- Idempotency keys for POST /v1/jobs: the same key from the same user within 24 hours returns the original
-- job instead of creating another; the same key with another request (document, options or metadata) is
-- refused (422). Rows older than 24 hours are purged by the workers' rescuer.
CREATE TABLE idempotency_keys (
    user_id         bigint NOT NULL REFERENCES users(id),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    job_id          uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    -- SHA-256 over the document's digest, the options and the metadata as sent.
    request_sha256  bytea NOT NULL CHECK (length(request_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
