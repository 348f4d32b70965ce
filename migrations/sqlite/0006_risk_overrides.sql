-- Risk-class overrides set through the admin API (`service.action` globs).
-- They join the config's `policy.risk`; on the same pattern the admin's wins.
CREATE TABLE risk_overrides (
    pattern    TEXT PRIMARY KEY,
    risk       TEXT NOT NULL CHECK (risk IN ('read', 'write', 'high_risk')),
    set_by     TEXT NOT NULL,
    set_at     TEXT NOT NULL
);
