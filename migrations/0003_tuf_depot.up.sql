CREATE TABLE tuf_trust_root (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    time_deleted TIMESTAMPTZ,
    sha256 TEXT NOT NULL,
    root_version INT8 NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    root_json TEXT NOT NULL
);

CREATE UNIQUE INDEX tuf_trust_root_live_sha256 ON tuf_trust_root (sha256) WHERE time_deleted IS NULL;

CREATE TABLE tuf_trust_root_lineage (
    root_sha256 TEXT PRIMARY KEY,
    root_version INT8 NOT NULL,
    timestamp_version INT8 NOT NULL,
    snapshot_version INT8 NOT NULL,
    targets_version INT8 NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);

CREATE TYPE tuf_repo_state AS ENUM ('active', 'degraded', 'failed');

CREATE TABLE tuf_repo (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    sha256 TEXT NOT NULL,
    system_version TEXT NOT NULL,
    file_name TEXT NOT NULL,
    valid_until TIMESTAMPTZ NOT NULL,
    trust_root_id UUID NOT NULL,
    root_version INT8 NOT NULL,
    timestamp_version INT8 NOT NULL,
    snapshot_version INT8 NOT NULL,
    targets_version INT8 NOT NULL,
    targets_sha256 TEXT NOT NULL,
    manifest_format INT4 NOT NULL,
    manifest_metadata JSONB NOT NULL DEFAULT '{}',
    time_pruned TIMESTAMPTZ,
    pruned_by TEXT,
    kept BOOL NOT NULL DEFAULT false,
    state tuf_repo_state NOT NULL DEFAULT 'active',
    state_reason TEXT NOT NULL DEFAULT '',
    CONSTRAINT tuf_repo_sha256_unique UNIQUE (sha256),
    CONSTRAINT tuf_repo_system_version_unique UNIQUE (system_version)
);

CREATE INDEX tuf_repo_newest_first ON tuf_repo (time_created DESC, id DESC);

CREATE TABLE tuf_artifact (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    length INT8 NOT NULL,
    tags JSONB NOT NULL DEFAULT '{}',
    CONSTRAINT tuf_artifact_length_nonnegative CHECK (length >= 0),
    CONSTRAINT tuf_artifact_identity_unique UNIQUE (name, version, kind, sha256)
);

CREATE INDEX tuf_artifact_sha256 ON tuf_artifact (sha256);

CREATE TABLE tuf_repo_artifact (
    repo_id UUID NOT NULL REFERENCES tuf_repo (id),
    artifact_id UUID NOT NULL REFERENCES tuf_artifact (id),
    target_name TEXT NOT NULL,
    PRIMARY KEY (repo_id, artifact_id)
);

CREATE INDEX tuf_repo_artifact_by_artifact ON tuf_repo_artifact (artifact_id);

CREATE TABLE tuf_generation (
    singleton BOOL PRIMARY KEY DEFAULT true,
    generation INT8 NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    CONSTRAINT tuf_generation_one_row CHECK (singleton),
    CONSTRAINT tuf_generation_positive CHECK (generation >= 1)
);

INSERT INTO tuf_generation (singleton, generation, time_modified) VALUES (true, 1, now());

CREATE TABLE nexus_artifact_copy (
    nexus_id UUID NOT NULL,
    sha256 TEXT NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (nexus_id, sha256)
);

CREATE INDEX nexus_artifact_copy_by_sha256 ON nexus_artifact_copy (sha256);
