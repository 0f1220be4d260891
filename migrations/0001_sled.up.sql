CREATE TYPE sled_policy AS ENUM ('in_service', 'expunged');

CREATE TYPE sled_state AS ENUM ('active', 'unreachable', 'decommissioned');

CREATE TABLE sled (
    id UUID PRIMARY KEY,
    time_created TIMESTAMPTZ NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    time_last_seen TIMESTAMPTZ NOT NULL,
    part_number TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    sled_agent_address TEXT NOT NULL,
    repo_depot_port INT4 NOT NULL DEFAULT 12348,
    policy sled_policy NOT NULL DEFAULT 'in_service',
    state sled_state NOT NULL DEFAULT 'active',
    CONSTRAINT sled_repo_depot_port_range CHECK (repo_depot_port BETWEEN 1 AND 65535),
    CONSTRAINT sled_baseboard_unique UNIQUE (part_number, serial_number)
);
