-- Administrators' API sign-ins: bearer tokens kept as their SHA-256, each with an expiry.
CREATE TABLE admin_tokens (
    token_hash TEXT PRIMARY KEY,
    admin TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Why a session ended: 'logoff' (the user), 'admin' (forced by an administrator),
-- 'replaced' (a reconnect from another client took over).
ALTER TABLE sessions ADD COLUMN end_reason TEXT;

-- Messages from an administrator to the user of a session ("Send message" in Horizon's
-- console); the client fetches them, each once.
CREATE TABLE session_messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    at BIGINT NOT NULL,
    sender TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    body TEXT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX session_messages_pending ON session_messages (session_id, delivered_at);
