-- A join token admits one named host, and re-joins (replacing an existing host's
-- certificate) only when the administrator asked for that.
ALTER TABLE join_tokens ADD COLUMN host_name TEXT;
ALTER TABLE join_tokens ADD COLUMN rejoin BIGINT NOT NULL DEFAULT 0;

-- Every host certificate the host CA signed: the broker's CRL names the revoked ones.
CREATE TABLE host_certificates (
    serial TEXT PRIMARY KEY,
    host_name TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX host_certificates_by_host ON host_certificates (host_name);
