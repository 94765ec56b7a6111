-- A session's bearer token (its SHA-256): the client proves with it that it may log the
-- session off, disconnect it or fetch a new display ticket.
ALTER TABLE sessions ADD COLUMN token_hash TEXT;
