-- mcpgate's schema on PostgreSQL, for several gateways sharing one store.
-- The same tables as the SQLite migrations (migrations/sqlite), with
-- PostgreSQL's types: BYTEA for BLOB, BIGINT for INTEGER, DOUBLE PRECISION for REAL.
-- Timestamps stay RFC 3339 text so both backends compare them the same way.

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_email    TEXT NOT NULL,
    name          TEXT,
    secret_sha256 BYTEA NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_email);

CREATE TABLE audit_events (
    id              BIGSERIAL PRIMARY KEY,
    call_id         TEXT NOT NULL UNIQUE,
    started_at      TEXT NOT NULL,
    completed_at    TEXT,
    subject         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    session         TEXT,
    client_name     TEXT,
    client_version  TEXT,
    service         TEXT,
    tool            TEXT NOT NULL,
    action          TEXT,
    risk            TEXT,
    decision        TEXT NOT NULL CHECK (decision IN ('allowed', 'refused', 'failed')),
    reason_code     TEXT,
    reason          TEXT,
    upstream_status TEXT,
    latency_ms      DOUBLE PRECISION,
    args_sha256     TEXT NOT NULL,
    grant_id        TEXT,
    job_id          TEXT,
    pii_rehydrated  BIGINT,
    pii_types       TEXT
);
CREATE INDEX audit_events_subject ON audit_events (subject, started_at);
CREATE INDEX audit_events_started ON audit_events (started_at);

CREATE TABLE confirmation_nonces (
    nonce      TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    used_at    TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT
);

CREATE TABLE windmill_instances (
    name          TEXT PRIMARY KEY,
    base_url      TEXT NOT NULL,
    workspace     TEXT NOT NULL,
    allowed_flows TEXT,
    created_at    TEXT NOT NULL,
    created_by    TEXT
);
CREATE INDEX windmill_instances_workspace ON windmill_instances (workspace);

CREATE TABLE delegation_approvals (
    id           TEXT PRIMARY KEY,
    instance     TEXT NOT NULL,
    workspace    TEXT NOT NULL,
    flow_path    TEXT NOT NULL,
    owner        TEXT NOT NULL,
    services     TEXT NOT NULL,
    approved_by  TEXT NOT NULL,
    approved_at  TEXT NOT NULL,
    withdrawn_at TEXT,
    withdrawn_by TEXT
);

CREATE TABLE delegation_grants (
    id                  TEXT PRIMARY KEY,
    subject             TEXT NOT NULL,
    actor               TEXT NOT NULL,
    instance            TEXT NOT NULL,
    workspace           TEXT NOT NULL,
    flow_path           TEXT NOT NULL,
    job_id              TEXT NOT NULL,
    flow_job_id         TEXT,
    scope               TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    revoke_requested_at TEXT,
    revoked_by          TEXT,
    ended_at            TEXT,
    end_reason          TEXT,
    secret_sha256       BYTEA,
    declared            TEXT
);
CREATE INDEX delegation_grants_live ON delegation_grants (ended_at);

CREATE TABLE grant_holders (
    grant_id TEXT NOT NULL,
    replica  TEXT NOT NULL,
    since    TEXT NOT NULL,
    PRIMARY KEY (grant_id, replica)
);

CREATE TABLE risk_overrides (
    pattern    TEXT PRIMARY KEY,
    risk       TEXT NOT NULL CHECK (risk IN ('read', 'write', 'high_risk')),
    set_by     TEXT NOT NULL,
    set_at     TEXT NOT NULL
);

CREATE TABLE pii_mappings (
    scope_id   TEXT NOT NULL,
    pseudonym  TEXT NOT NULL,
    entity     TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope_id, pseudonym)
);
CREATE INDEX pii_mappings_pseudonym ON pii_mappings (pseudonym);
CREATE INDEX pii_mappings_expiry ON pii_mappings (expires_at);

CREATE TABLE pii_stats (
    service      TEXT NOT NULL,
    entity       TEXT NOT NULL,
    detected     BIGINT NOT NULL DEFAULT 0,
    rehydrated   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (service, entity)
);

CREATE TABLE credentials (
    user_email TEXT NOT NULL,
    service    TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('token', 'basic', 'oauth')),
    sealed     BYTEA NOT NULL,
    key_id     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_email, service)
);
