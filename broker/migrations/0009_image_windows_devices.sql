-- What a Windows image's desktops need besides UEFI firmware: Hyper-V enlightenments, and a
-- TPM 2.0 (Windows 11), each desktop's TPM kept by its host with the VM.
ALTER TABLE image_versions ADD COLUMN hyperv BIGINT NOT NULL DEFAULT 0 CHECK (hyperv IN (0, 1));
ALTER TABLE image_versions ADD COLUMN tpm BIGINT NOT NULL DEFAULT 0 CHECK (tpm IN (0, 1));
