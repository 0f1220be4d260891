CREATE TABLE rack (
    singleton BOOL PRIMARY KEY DEFAULT true,
    id UUID NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    setup TEXT NOT NULL,
    CONSTRAINT rack_one_row CHECK (singleton),
    CONSTRAINT rack_id_unique UNIQUE (id),
    CONSTRAINT rack_setup_kind CHECK (setup IN ('trust_quorum', 'lrtq'))
);

CREATE TYPE trust_quorum_state AS ENUM (
    'preparing', 'preparing_lrtq_upgrade', 'committing', 'committed', 'committed_partially', 'aborted');

CREATE TABLE trust_quorum_configuration (
    rack_id UUID NOT NULL REFERENCES rack (id),
    epoch INT8 NOT NULL,
    last_committed_epoch INT8 NOT NULL,
    state trust_quorum_state NOT NULL,
    member_count INT4 NOT NULL,
    threshold INT4 NOT NULL,
    commit_crash_tolerance INT4 NOT NULL,
    coordinator_part TEXT NOT NULL,
    coordinator_serial TEXT NOT NULL,
    lrtq BOOL NOT NULL DEFAULT false,
    lrtq_upgrade BOOL NOT NULL DEFAULT false,
    encrypted_secrets_salt BYTEA,
    encrypted_secrets_ciphertext BYTEA,
    configuration_recorded BOOL NOT NULL DEFAULT false,
    change_id UUID NOT NULL,
    attempt INT4 NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
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

CREATE UNIQUE INDEX trust_quorum_one_active ON trust_quorum_configuration (rack_id)
    WHERE state IN ('preparing', 'preparing_lrtq_upgrade', 'committing');

CREATE INDEX trust_quorum_configuration_by_change ON trust_quorum_configuration (change_id, attempt);

CREATE TYPE trust_quorum_member_state AS ENUM ('unacked', 'prepared', 'committed');

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

CREATE TABLE trust_quorum_sighting (
    part_number TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    seen_by_part TEXT NOT NULL,
    seen_by_serial TEXT NOT NULL,
    time_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (part_number, serial_number)
);
