-- Pseudonym → real value, per scope, sealed with AES-256-GCM under a key
-- derived from the gateway key (the scope id and pseudonym are the AAD).
-- Shared by every gateway on the store; rows expire.
CREATE TABLE pii_mappings (
    scope_id   TEXT NOT NULL,
    pseudonym  TEXT NOT NULL,
    entity     TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope_id, pseudonym)
);
CREATE INDEX pii_mappings_pseudonym ON pii_mappings (pseudonym);
CREATE INDEX pii_mappings_expiry ON pii_mappings (expires_at);

-- What was detected and re-identified, per service and entity (never values).
CREATE TABLE pii_stats (
    service      TEXT NOT NULL,
    entity       TEXT NOT NULL,
    detected     INTEGER NOT NULL DEFAULT 0,
    rehydrated   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (service, entity)
);

ALTER TABLE audit_events ADD COLUMN pii_rehydrated INTEGER;
ALTER TABLE audit_events ADD COLUMN pii_types TEXT;
