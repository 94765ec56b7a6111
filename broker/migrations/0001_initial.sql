-- Tessera broker schema, version 1. Written in the SQL that SQLite and PostgreSQL share: text
-- identifiers, BIGINT Unix milliseconds, flags as BIGINT 0/1 (sqlx's Any driver cannot
-- decode SQLite's BOOLEAN), CHECK constraints; the same file migrates both.

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('joining', 'online', 'offline', 'maintenance')),
    cert_fingerprint TEXT,
    cpus BIGINT NOT NULL DEFAULT 0,
    memory_total BIGINT NOT NULL DEFAULT 0,
    memory_free BIGINT NOT NULL DEFAULT 0,
    last_heartbeat BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE datastores (
    id TEXT PRIMARY KEY,
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    capacity BIGINT NOT NULL DEFAULT 0,
    free BIGINT NOT NULL DEFAULT 0,
    UNIQUE (host_id, name)
);

CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

-- A golden image's versions: a base disk (and, for Linux direct boot, a kernel and initrd).
CREATE TABLE image_versions (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    disk TEXT NOT NULL,
    size BIGINT NOT NULL,
    kernel TEXT,
    initrd TEXT,
    cmdline TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (image_id, version)
);

-- Where each version's base disk has been copied (a linked clone needs its base on the host).
CREATE TABLE image_copies (
    version_id TEXT NOT NULL REFERENCES image_versions (id) ON DELETE CASCADE,
    datastore_id TEXT NOT NULL REFERENCES datastores (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('copying', 'ready', 'error')),
    PRIMARY KEY (version_id, datastore_id)
);

CREATE TABLE pools (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    image_id TEXT NOT NULL REFERENCES images (id),
    image_version BIGINT NOT NULL,
    assignment TEXT NOT NULL CHECK (assignment IN ('dedicated', 'floating')),
    clone_kind TEXT NOT NULL CHECK (clone_kind IN ('linked', 'full')),
    naming TEXT NOT NULL,
    min_desktops BIGINT NOT NULL CHECK (min_desktops >= 0),
    max_desktops BIGINT NOT NULL CHECK (max_desktops >= min_desktops),
    spare_desktops BIGINT NOT NULL CHECK (spare_desktops >= 0),
    power_policy TEXT NOT NULL CHECK (power_policy IN ('always-on', 'off-when-idle', 'off-after-logoff')),
    refresh_on_logoff BIGINT NOT NULL CHECK (refresh_on_logoff IN (0, 1)),
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    next_index BIGINT NOT NULL DEFAULT 1,
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    created_at BIGINT NOT NULL
);

-- Who may use a pool: a directory user or group (by DN), or a local account.
CREATE TABLE entitlements (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'group', 'local')),
    principal TEXT NOT NULL,
    directory TEXT NOT NULL DEFAULT '',
    UNIQUE (pool_id, kind, directory, principal)
);

CREATE TABLE desktops (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools (id),
    name TEXT NOT NULL UNIQUE,
    host_id TEXT REFERENCES hosts (id),
    disk TEXT,
    state TEXT NOT NULL CHECK (state IN ('provisioning', 'ready', 'running', 'assigned',
        'connected', 'disconnected', 'refreshing', 'error', 'deleting')),
    assigned_user TEXT,
    generation BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A user has at most one desktop per pool (dedicated assignment, and floating while in use).
CREATE UNIQUE INDEX desktops_one_per_user ON desktops (pool_id, assigned_user);
CREATE INDEX desktops_by_state ON desktops (pool_id, state);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    desktop_id TEXT NOT NULL REFERENCES desktops (id),
    user_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('starting', 'connected', 'disconnected', 'ended')),
    client TEXT NOT NULL DEFAULT '',
    started_at BIGINT NOT NULL,
    ended_at BIGINT
);
-- A desktop carries at most one live session.
CREATE UNIQUE INDEX sessions_one_live ON sessions (desktop_id) WHERE ended_at IS NULL;

-- One-time display tickets: only a hash is kept; used once, within their lifetime.
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    secret_hash TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,
    duration_ms BIGINT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_time ON events (at);

-- Built-in accounts: the all-in-one's users and the break-glass administrator.
CREATE TABLE local_accounts (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL CHECK (is_admin IN (0, 1)),
    disabled BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    created_at BIGINT NOT NULL
);
