-- Gateway credentials. Only a SHA-256 of the secret part is stored.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_email    TEXT NOT NULL,
    name          TEXT,
    secret_sha256 BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_email);

-- One row per call and per refusal. Allowed calls are written before the
-- upstream runs (completed_at NULL) and completed with the outcome.
CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
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
    latency_ms      REAL,
    args_sha256     TEXT NOT NULL,
    grant_id        TEXT
);
CREATE INDEX audit_events_subject ON audit_events (subject, started_at);
CREATE INDEX audit_events_started ON audit_events (started_at);
