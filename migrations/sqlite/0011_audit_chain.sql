-- Tamper evidence: every audit write is an entry of a hash chain (see
-- actors/src/audit_chain.rs). A row keeps its decision's entry and its
-- outcome's; other entries (a chain's genesis, retention prunes, outcomes
-- that found no open row) are marks. Checkpoints sign chain heads.
ALTER TABLE audit_events ADD COLUMN chain_id TEXT;
ALTER TABLE audit_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_events ADD COLUMN chain_hash TEXT;
ALTER TABLE audit_events ADD COLUMN chain_entry TEXT;
ALTER TABLE audit_events ADD COLUMN outcome_chain TEXT;
ALTER TABLE audit_events ADD COLUMN outcome_seq INTEGER;
ALTER TABLE audit_events ADD COLUMN outcome_hash TEXT;
ALTER TABLE audit_events ADD COLUMN outcome_entry TEXT;
-- Finding a chain's head when the next chain starts.
CREATE INDEX audit_events_chain ON audit_events (chain_id, chain_seq);
CREATE INDEX audit_events_outcome_chain ON audit_events (outcome_chain, outcome_seq);

CREATE TABLE audit_chain_marks (
    chain_id   TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('genesis', 'prune', 'void')),
    entry      TEXT NOT NULL,
    hash       TEXT NOT NULL,
    written_at TEXT NOT NULL,
    PRIMARY KEY (chain_id, seq)
);

CREATE TABLE audit_checkpoints (
    chain_id  TEXT NOT NULL,
    size      INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    note      TEXT NOT NULL,
    PRIMARY KEY (chain_id, size)
);
