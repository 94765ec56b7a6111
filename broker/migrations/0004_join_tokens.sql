-- One-time tokens with which a host's agent joins (tessera-broker join-token): only the
-- secret's SHA-256 is kept; a token is used once, before it expires.
CREATE TABLE join_tokens (
    secret_hash TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT
);
