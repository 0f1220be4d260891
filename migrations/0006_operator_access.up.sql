CREATE TYPE operator_role AS ENUM ('viewer', 'admin');

CREATE TABLE operator_token (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    role operator_role NOT NULL,
    token_sha256 BYTEA NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    time_expires TIMESTAMPTZ,
    time_last_used TIMESTAMPTZ,
    time_revoked TIMESTAMPTZ,
    created_by TEXT NOT NULL,
    CONSTRAINT operator_token_hash_length CHECK (length(token_sha256) = 32),
    CONSTRAINT operator_token_name_nonempty CHECK (name <> ''),
    CONSTRAINT operator_token_expires_after_created CHECK (time_expires IS NULL OR time_expires > time_created),
    CONSTRAINT operator_token_hash_unique UNIQUE (token_sha256)
);

CREATE TABLE audit_log (
    id UUID PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error_code TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    CONSTRAINT audit_log_outcome CHECK (outcome IN ('ok', 'refused', 'failed'))
);

CREATE INDEX audit_log_by_time ON audit_log (time DESC, id DESC);
