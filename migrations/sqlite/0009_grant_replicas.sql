-- What another gateway on the same store needs to serve a grant it did not
-- mint: the SHA-256 of the token's secret part and the declared scope (JSON).
ALTER TABLE delegation_grants ADD COLUMN secret_sha256 BLOB;
ALTER TABLE delegation_grants ADD COLUMN declared TEXT;
