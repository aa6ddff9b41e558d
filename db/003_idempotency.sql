-- Idempotency keys for POST /v1/jobs: the same key from the same user within 24 hours returns the original
-- job instead of creating another; the same key with another document is refused (422).
CREATE TABLE idempotency_keys (
    user_id          bigint NOT NULL REFERENCES users(id),
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    job_id           uuid NOT NULL REFERENCES jobs(id),
    document_sha256  bytea NOT NULL CHECK (length(document_sha256) = 32),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
