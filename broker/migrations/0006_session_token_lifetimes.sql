-- When a session's bearer token was last used: it dies after an idle period, and after an
-- absolute lifetime counted from started_at (NULL: not used since the logon).
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT;
