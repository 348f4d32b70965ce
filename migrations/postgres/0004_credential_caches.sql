-- Gateways remember verified API and OAuth access tokens (credential_cache.rs).
-- Every revocation bumps the epoch and notifies (mcpgate_credentials); each
-- replica forgets what it held and acknowledges the epoch here. A revocation
-- returns once every replica acknowledged within the last 8 s has caught up.
CREATE TABLE credential_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO credential_epoch (id, epoch) VALUES (1, 0);

CREATE TABLE credential_caches (
    replica TEXT PRIMARY KEY,
    epoch   BIGINT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);
