CREATE TABLE bgtask_setting (
    name TEXT PRIMARY KEY,
    enabled BOOL NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    modified_by TEXT NOT NULL
);

CREATE TABLE bgtask_heartbeat (
    nexus_id UUID PRIMARY KEY,
    time_written TIMESTAMPTZ NOT NULL,
    tasks JSONB NOT NULL
);
