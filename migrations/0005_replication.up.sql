CREATE TABLE nexus_instance (
    id UUID PRIMARY KEY,
    internal_url TEXT NOT NULL,
    time_started TIMESTAMPTZ NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);

ALTER TABLE sled ADD COLUMN artifacts_complete INT8;
