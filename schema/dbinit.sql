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
    CONSTRAINT sled_repo_depot_port_range CHECK (repo_depot_port BETWEEN 1 AND 65535),
    CONSTRAINT sled_baseboard_unique UNIQUE (part_number, serial_number)
);

-- Sled inventory -----------------------------------------------------------

-- What each sled agent last reported about its storage. NULL until an agent
-- that reports it registers (older agents leave the values alone).
-- The artifact config generation the sled holds.
ALTER TABLE sled ADD COLUMN artifact_generation INT8
    CONSTRAINT sled_artifact_generation_nonnegative CHECK (artifact_generation >= 0);
-- The sled's M.2 devices: [{"path", "present", "free_bytes", "total_bytes", "error"}].
ALTER TABLE sled ADD COLUMN m2_devices JSONB;
