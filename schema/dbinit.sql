-- rackplane: the whole current database schema.
--
-- A fresh database is created from this file; an older one is brought here
-- by the numbered files in migrations/. A test checks that both paths give
-- the same catalog, so every change goes into both.
--
-- Everything here must run unchanged on PostgreSQL 15 and CockroachDB:
-- UUID keys (no sequences), INT8/INT4, TEXT, BYTEA, TIMESTAMPTZ, JSONB,
-- enums via CREATE TYPE.

-- Sleds --------------------------------------------------------------------

-- Whether the operator wants the sled in the rack. Expunged is permanent.
CREATE TYPE sled_policy AS ENUM ('in_service', 'expunged');

-- What Nexus last observed: 'unreachable' when the sled stopped reporting.
CREATE TYPE sled_state AS ENUM ('active', 'unreachable', 'decommissioned');

CREATE TABLE sled (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    -- Last time the sled agent registered; drives the liveness task.
    time_last_seen TIMESTAMPTZ NOT NULL,
    part_number TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    -- host:port of the sled agent's API.
    sled_agent_address TEXT NOT NULL,
    -- Real sleds always serve their repo depot on 12348, so that is the
    -- right value for rows written before sleds reported it; dev racks and
    -- tests report their own.
    repo_depot_port INT4 NOT NULL DEFAULT 12348,
    policy sled_policy NOT NULL DEFAULT 'in_service',
    state sled_state NOT NULL DEFAULT 'active',
    -- Inventory: what the sled agent last reported about its storage; NULL
    -- until an agent that reports it registers (older agents leave the
    -- values alone). The artifact config generation the sled holds:
    artifact_generation INT8,
    -- Its M.2 devices: [{"path", "present", "free_bytes", "total_bytes", "error"}].
    m2_devices JSONB,
    -- How many of the config's artifacts it holds on every M.2; a change
    -- means copies finished or were lost, so replication runs.
    artifacts_complete INT8,
    CONSTRAINT sled_artifact_generation_nonnegative CHECK (artifact_generation >= 0),
    CONSTRAINT sled_repo_depot_port_range CHECK (repo_depot_port BETWEEN 1 AND 65535),
    CONSTRAINT sled_baseboard_unique UNIQUE (part_number, serial_number)
);

-- Background tasks ---------------------------------------------------------

-- Operator switches for background tasks, honoured by every Nexus at each
-- activation. Keyed by the task's stable name (no sequence involved); a
-- task without a row is enabled.
CREATE TABLE bgtask_setting (
    name TEXT PRIMARY KEY,
    enabled BOOL NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    -- Who flipped it (the API request id), for the audit trail in logs.
    modified_by TEXT NOT NULL
);

-- Each Nexus's latest compact summary of its tasks, so that any Nexus can
-- show every Nexus's tasks. time_written is the database's clock.
CREATE TABLE bgtask_heartbeat (
    nexus_id UUID PRIMARY KEY,
    time_written TIMESTAMPTZ NOT NULL,
    -- JSON array of api.TaskSummary.
    tasks JSONB NOT NULL
);

-- TUF depot ----------------------------------------------------------------

-- Roots operators trust to sign releases. Deleting one is a soft delete so
-- repos verified against it keep a meaningful trust_root_id.
CREATE TABLE tuf_trust_root (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    time_deleted TIMESTAMPTZ,
    -- Hash of root_json as registered; the same document is registered once.
    sha256 TEXT NOT NULL,
    root_version INT8 NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    -- Exactly the bytes the operator sent (signatures cover their content).
    root_json TEXT NOT NULL
);

CREATE UNIQUE INDEX tuf_trust_root_live_sha256 ON tuf_trust_root (sha256) WHERE time_deleted IS NULL;

-- Rollback protection: the highest metadata versions accepted so far from
-- each trust root, keyed by the root document's hash so that deleting and
-- re-adding a root does not reset them.
CREATE TABLE tuf_trust_root_lineage (
    root_sha256 TEXT PRIMARY KEY,
    root_version INT8 NOT NULL,
    timestamp_version INT8 NOT NULL,
    snapshot_version INT8 NOT NULL,
    targets_version INT8 NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);

-- 'degraded': some artifact has no known holder; 'failed': given up on.
CREATE TYPE tuf_repo_state AS ENUM ('active', 'degraded', 'failed');

CREATE TABLE tuf_repo (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    -- Hash of the uploaded archive; a re-upload with the same hash is a no-op.
    sha256 TEXT NOT NULL,
    system_version TEXT NOT NULL,
    file_name TEXT NOT NULL,
    -- Earliest expiry among the repo's metadata roles.
    valid_until TIMESTAMPTZ NOT NULL,
    trust_root_id UUID NOT NULL,
    root_version INT8 NOT NULL,
    timestamp_version INT8 NOT NULL,
    snapshot_version INT8 NOT NULL,
    targets_version INT8 NOT NULL,
    -- Hash of the signed targets metadata, to name differences on conflict.
    targets_sha256 TEXT NOT NULL,
    -- 1 for artifacts.json, 2 for artifacts-v2.json.
    manifest_format INT4 NOT NULL,
    manifest_metadata JSONB NOT NULL DEFAULT '{}',
    -- Set when pruned (by 'operator' or 'pruner'); pruned repos' artifacts
    -- are no longer wanted on sleds unless a live repo also carries them.
    time_pruned TIMESTAMPTZ,
    pruned_by TEXT,
    -- An operator-kept repo is never pruned automatically.
    kept BOOL NOT NULL DEFAULT false,
    state tuf_repo_state NOT NULL DEFAULT 'active',
    state_reason TEXT NOT NULL DEFAULT '',
    CONSTRAINT tuf_repo_sha256_unique UNIQUE (sha256),
    CONSTRAINT tuf_repo_system_version_unique UNIQUE (system_version)
);

-- Listing is newest first.
CREATE INDEX tuf_repo_newest_first ON tuf_repo (time_created DESC, id DESC);

-- One row per distinct (name, version, kind, bytes); repos that carry the
-- same artifact share its row. Several rows may share a sha256 (the same
-- bytes released under two kinds), so sha256 alone is not unique.
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
    -- The TUF target the artifact's bytes came from in this repo.
    target_name TEXT NOT NULL,
    PRIMARY KEY (repo_id, artifact_id)
);

CREATE INDEX tuf_repo_artifact_by_artifact ON tuf_repo_artifact (artifact_id);

-- The parts of composite artifacts (a host or trampoline image's phase-1
-- and phase-2 images, an RoT's A and B images, the control plane's zones),
-- read out of them on upload. A part is an artifact of its own (linked to
-- the repo in tuf_repo_artifact, and so replicated to sleds); this says
-- which composite it came from and where in its tarball it was.
CREATE TABLE tuf_artifact_part (
    composite_id UUID NOT NULL REFERENCES tuf_artifact (id),
    part_id UUID NOT NULL REFERENCES tuf_artifact (id),
    path TEXT NOT NULL,
    PRIMARY KEY (composite_id, part_id),
    CONSTRAINT tuf_artifact_part_path_nonempty CHECK (path <> ''),
    CONSTRAINT tuf_artifact_part_not_itself CHECK (composite_id <> part_id)
);

CREATE INDEX tuf_artifact_part_by_part ON tuf_artifact_part (part_id);

-- The generation of "the set of artifacts sleds should hold" (the sha256s
-- of every live repo's artifacts). Every change of that set bumps it by
-- compare-and-swap in the same transaction.
CREATE TABLE tuf_generation (
    singleton BOOL PRIMARY KEY DEFAULT true,
    generation INT8 NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    CONSTRAINT tuf_generation_one_row CHECK (singleton),
    CONSTRAINT tuf_generation_positive CHECK (generation >= 1)
);

INSERT INTO tuf_generation (singleton, generation, time_modified) VALUES (true, 1, now());

-- Which Nexus instance holds which artifact in its local depot, so another
-- Nexus can fetch from it and a repo whose only holder is gone is noticed.
CREATE TABLE nexus_artifact_copy (
    nexus_id UUID NOT NULL,
    sha256 TEXT NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (nexus_id, sha256)
);

CREATE INDEX nexus_artifact_copy_by_sha256 ON nexus_artifact_copy (sha256);

-- Nexus instances -----------------------------------------------------------

-- Every Nexus that has run against this database, with the internal URL
-- sleds use to reach it: a sled told to copy an artifact from another
-- Nexus's local depot fetches it there.
CREATE TABLE nexus_instance (
    id UUID PRIMARY KEY,
    internal_url TEXT NOT NULL,
    time_started TIMESTAMPTZ NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);

-- Operator access ------------------------------------------------------------

CREATE TYPE operator_role AS ENUM ('viewer', 'admin');

-- Bearer tokens operators authenticate with. Only a SHA-256 of each token is
-- stored: the token itself is shown once, when it is made. A revoked or
-- expired token stays for the record.
CREATE TABLE operator_token (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    role operator_role NOT NULL,
    token_sha256 BYTEA NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    time_expires TIMESTAMPTZ,
    time_last_used TIMESTAMPTZ,
    time_revoked TIMESTAMPTZ,
    -- Who made it: a token's name, or "nexus token create" at the console.
    created_by TEXT NOT NULL,
    CONSTRAINT operator_token_hash_length CHECK (length(token_sha256) = 32),
    CONSTRAINT operator_token_name_nonempty CHECK (name <> ''),
    CONSTRAINT operator_token_expires_after_created CHECK (time_expires IS NULL OR time_expires > time_created),
    CONSTRAINT operator_token_hash_unique UNIQUE (token_sha256)
);

-- Every operator mutation, accepted or not: who, what, on what, the request
-- id that ties it to the logs, and the outcome. Written in the same
-- transaction as the change when there is one.
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

-- Trust quorum ---------------------------------------------------------------

-- The rack this database governs: one row, written when the rack-setup
-- service hands the rack over (its id is in every trust-quorum message).
-- setup says how the trust quorum began: epoch 1 ('trust_quorum') or LRTQ.
CREATE TABLE rack (
    singleton BOOL PRIMARY KEY DEFAULT true,
    id UUID NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    setup TEXT NOT NULL,
    CONSTRAINT rack_one_row CHECK (singleton),
    CONSTRAINT rack_id_unique UNIQUE (id),
    CONSTRAINT rack_setup_kind CHECK (setup IN ('trust_quorum', 'lrtq'))
);

-- preparing (or preparing_lrtq_upgrade) -> committing once K+Z members
-- acked the prepare -> committed once every member acked the commit, or
-- committed_partially when a newer configuration started after K+Z commit
-- acks; preparing -> aborted.
CREATE TYPE trust_quorum_state AS ENUM (
    'preparing', 'preparing_lrtq_upgrade', 'committing', 'committed', 'committed_partially', 'aborted');

-- One row per epoch. Nexus assigns epochs; aborted ones are skipped for
-- good. The configuration the coordinator made (shares' digests and x
-- coordinates, the encrypted chain of earlier secrets) holds no secret and
-- is recorded once the coordinator reports it (configuration_recorded).
CREATE TABLE trust_quorum_configuration (
    rack_id UUID NOT NULL REFERENCES rack (id),
    epoch INT8 NOT NULL,
    -- The committed epoch this one is built on (0: none; 1 for an LRTQ upgrade).
    last_committed_epoch INT8 NOT NULL,
    state trust_quorum_state NOT NULL,
    member_count INT4 NOT NULL,
    threshold INT4 NOT NULL,
    -- Z: Nexus commits once threshold + Z members acked the prepare.
    commit_crash_tolerance INT4 NOT NULL,
    coordinator_part TEXT NOT NULL,
    coordinator_serial TEXT NOT NULL,
    -- Epoch 1 of a rack set up with LRTQ: no shares of ours are recorded.
    lrtq BOOL NOT NULL DEFAULT false,
    lrtq_upgrade BOOL NOT NULL DEFAULT false,
    encrypted_secrets_salt BYTEA,
    encrypted_secrets_ciphertext BYTEA,
    configuration_recorded BOOL NOT NULL DEFAULT false,
    -- The operator's request this epoch serves, and which attempt at it:
    -- an epoch aborted automatically is retried as the next one.
    change_id UUID NOT NULL,
    attempt INT4 NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    -- The last time the prepare moved forward; the manager aborts an
    -- epoch that has not for its configured time.
    time_last_progress TIMESTAMPTZ NOT NULL,
    time_committing TIMESTAMPTZ,
    time_committed TIMESTAMPTZ,
    time_aborted TIMESTAMPTZ,
    abort_reason TEXT,
    PRIMARY KEY (rack_id, epoch),
    CONSTRAINT tq_config_epoch_positive CHECK (epoch >= 1),
    CONSTRAINT tq_config_last_committed_older CHECK (last_committed_epoch >= 0 AND last_committed_epoch < epoch),
    CONSTRAINT tq_config_member_count CHECK (member_count BETWEEN 3 AND 32),
    CONSTRAINT tq_config_threshold CHECK (threshold BETWEEN 2 AND 31 AND threshold < member_count),
    CONSTRAINT tq_config_crash_tolerance CHECK (
        commit_crash_tolerance BETWEEN 0 AND 4 AND threshold + commit_crash_tolerance <= member_count),
    CONSTRAINT tq_config_attempt_positive CHECK (attempt >= 1),
    CONSTRAINT tq_config_lrtq_is_epoch_1 CHECK (NOT lrtq OR (epoch = 1 AND NOT lrtq_upgrade)),
    CONSTRAINT tq_config_upgrade_after_lrtq CHECK (NOT lrtq_upgrade OR epoch >= 2),
    CONSTRAINT tq_config_upgrade_state CHECK (
        (state <> 'preparing_lrtq_upgrade' OR lrtq_upgrade) AND (state <> 'preparing' OR NOT lrtq_upgrade)),
    CONSTRAINT tq_config_secrets_pair CHECK ((encrypted_secrets_salt IS NULL) = (encrypted_secrets_ciphertext IS NULL)),
    CONSTRAINT tq_config_secrets_recorded CHECK (encrypted_secrets_salt IS NULL OR configuration_recorded),
    CONSTRAINT tq_config_salt_length CHECK (encrypted_secrets_salt IS NULL OR length(encrypted_secrets_salt) = 32),
    CONSTRAINT tq_config_committing_time CHECK (
        (time_committing IS NOT NULL) = (state IN ('committing', 'committed', 'committed_partially'))),
    CONSTRAINT tq_config_committed_time CHECK (
        (time_committed IS NOT NULL) = (state IN ('committed', 'committed_partially'))),
    CONSTRAINT tq_config_aborted_time CHECK ((time_aborted IS NOT NULL) = (state = 'aborted')),
    CONSTRAINT tq_config_abort_reason CHECK ((abort_reason IS NOT NULL) = (state = 'aborted')),
    CONSTRAINT tq_config_commit_needs_configuration CHECK (time_committing IS NULL OR configuration_recorded OR lrtq),
    CONSTRAINT tq_config_times_ordered CHECK (
        time_last_progress >= time_created AND (time_committing IS NULL OR time_committing >= time_created)
        AND (time_committed IS NULL OR time_committed >= time_committing)
        AND (time_aborted IS NULL OR time_aborted >= time_created))
);

-- At most one configuration per rack is in progress.
CREATE UNIQUE INDEX trust_quorum_one_active ON trust_quorum_configuration (rack_id)
    WHERE state IN ('preparing', 'preparing_lrtq_upgrade', 'committing');

-- The attempts at one operator request, in order.
CREATE INDEX trust_quorum_configuration_by_change ON trust_quorum_configuration (change_id, attempt);

CREATE TYPE trust_quorum_member_state AS ENUM ('unacked', 'prepared', 'committed');

-- The members of each epoch and what Nexus has recorded of them: prepared
-- (the coordinator counted its prepare ack) and committed (it answered a
-- commit). A member committed by prepare-and-commit was never prepared.
CREATE TABLE trust_quorum_member (
    rack_id UUID NOT NULL,
    epoch INT8 NOT NULL,
    part_number TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    state trust_quorum_member_state NOT NULL,
    share_digest BYTEA,
    share_x INT4,
    time_prepared TIMESTAMPTZ,
    time_committed TIMESTAMPTZ,
    PRIMARY KEY (rack_id, epoch, part_number, serial_number),
    CONSTRAINT tq_member_configuration FOREIGN KEY (rack_id, epoch)
        REFERENCES trust_quorum_configuration (rack_id, epoch),
    CONSTRAINT tq_member_baseboard_nonempty CHECK (part_number <> '' AND serial_number <> ''),
    CONSTRAINT tq_member_share_pair CHECK ((share_digest IS NULL) = (share_x IS NULL)),
    CONSTRAINT tq_member_digest_length CHECK (share_digest IS NULL OR length(share_digest) = 32),
    CONSTRAINT tq_member_x_range CHECK (share_x IS NULL OR share_x BETWEEN 1 AND 255),
    CONSTRAINT tq_member_prepared_time CHECK (state = 'unacked' OR state = 'committed' OR time_prepared IS NOT NULL),
    CONSTRAINT tq_member_unacked_time CHECK (state <> 'unacked' OR (time_prepared IS NULL AND time_committed IS NULL)),
    CONSTRAINT tq_member_committed_time CHECK ((time_committed IS NOT NULL) = (state = 'committed')),
    CONSTRAINT tq_member_x_unique UNIQUE (rack_id, epoch, share_x)
);

-- What the trust-quorum manager last saw of each node, so operators see
-- every node without asking each. time_observed, observed_by, via
-- ('direct', or 'proxy PART:SERIAL') and error are the last attempt;
-- time_status and status the last answer (NULL until there was one):
-- {"latest_committed_epoch", "latest_configuration_epoch", "has_lrtq",
-- "expunged", "coordinating_epoch", "connected_peers", "alarms",
-- "ledger_generation", "stopped", "stopped_reason"}.
CREATE TABLE trust_quorum_node_status (
    part_number TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    time_observed TIMESTAMPTZ NOT NULL,
    observed_by UUID NOT NULL,
    via TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    time_status TIMESTAMPTZ,
    latest_committed_epoch INT8,
    alarm_count INT4 NOT NULL DEFAULT 0,
    status JSONB,
    PRIMARY KEY (part_number, serial_number),
    CONSTRAINT tq_node_status_seen CHECK ((time_status IS NULL) = (status IS NULL)),
    CONSTRAINT tq_node_status_alarm_count CHECK (alarm_count >= 0),
    CONSTRAINT tq_node_status_epoch CHECK (latest_committed_epoch IS NULL OR latest_committed_epoch >= 0)
);

-- Sleds members reported seeing on the bootstrap network, with the last
-- reporter and time: how Nexus knows a sled that is not a member yet (the
-- uninitialised sleds an operator may add).
CREATE TABLE trust_quorum_sighting (
    part_number TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    seen_by_part TEXT NOT NULL,
    seen_by_serial TEXT NOT NULL,
    time_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (part_number, serial_number)
);
