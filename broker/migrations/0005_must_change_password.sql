-- A local account created with a temporary password (tessera-broker add-account
-- --must-change-password) signs in only to change it, as AD's "must change at next logon".
ALTER TABLE local_accounts ADD COLUMN must_change_password BIGINT NOT NULL DEFAULT 0;
