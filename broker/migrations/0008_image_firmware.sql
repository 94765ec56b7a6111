-- A golden image version may boot through UEFI firmware (a file in the hosts' image library,
-- such as OVMF_CODE_4M.fd) instead of a kernel; each desktop then keeps its own variables.
ALTER TABLE image_versions ADD COLUMN firmware TEXT;
