-- Operator switches (the Delegated Access flag lives here).
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT
);

-- Windmill workspaces allowed to delegate. The gateway calls back only here.
CREATE TABLE windmill_instances (
    name          TEXT PRIMARY KEY,
    base_url      TEXT NOT NULL,
    workspace     TEXT NOT NULL,
    -- JSON array of flow-path globs allowed to delegate; NULL = any flow.
    allowed_flows TEXT,
    created_at    TEXT NOT NULL,
    created_by    TEXT
);
CREATE INDEX windmill_instances_workspace ON windmill_instances (workspace);

-- An admin's approval of high_risk for one delegation.
CREATE TABLE delegation_approvals (
    id           TEXT PRIMARY KEY,
    instance     TEXT NOT NULL,
    workspace    TEXT NOT NULL,
    flow_path    TEXT NOT NULL,
    owner        TEXT NOT NULL,
    -- JSON array of service names.
    services     TEXT NOT NULL,
    approved_by  TEXT NOT NULL,
    approved_at  TEXT NOT NULL,
    withdrawn_at TEXT,
    withdrawn_by TEXT
);

-- Every grant minted; live ones have ended_at NULL. A revocation written by
-- another process (CLI, another replica) sets revoke_requested_at; the
-- gateway holding the grant's actor stops it and sets ended_at.
CREATE TABLE delegation_grants (
    id                  TEXT PRIMARY KEY,
    subject             TEXT NOT NULL,
    actor               TEXT NOT NULL,
    instance            TEXT NOT NULL,
    workspace           TEXT NOT NULL,
    flow_path           TEXT NOT NULL,
    job_id              TEXT NOT NULL,
    flow_job_id         TEXT,
    -- JSON {"service": "risk"}: what was granted.
    scope               TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    revoke_requested_at TEXT,
    revoked_by          TEXT,
    ended_at            TEXT,
    end_reason          TEXT
);
CREATE INDEX delegation_grants_live ON delegation_grants (ended_at);

ALTER TABLE audit_events ADD COLUMN job_id TEXT;
