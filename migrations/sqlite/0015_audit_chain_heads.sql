-- Each chain's head (its size and last hash), kept by triggers in the same
-- statement that appends an entry, so a new chain's genesis can witness the
-- earlier chains' heads with one key lookup each. It replaces two indexes
-- on audit_events that every audited call paid for (issue 16: the chain's
-- cost was those indexes). The heads are a convenience, not evidence:
-- `audit verify` never reads them.
CREATE TABLE audit_chain_heads (
    chain_id TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    hash     TEXT NOT NULL
);

INSERT INTO audit_chain_heads (chain_id, size, hash)
WITH entries (chain, seq, hash) AS (
    SELECT chain_id, chain_seq, chain_hash FROM audit_events WHERE chain_id IS NOT NULL
    UNION ALL
    SELECT outcome_chain, outcome_seq, outcome_hash FROM audit_events WHERE outcome_chain IS NOT NULL
    UNION ALL
    SELECT chain_id, seq, hash FROM audit_chain_marks
),
last (chain, seq) AS (SELECT chain, MAX(seq) FROM entries GROUP BY chain)
SELECT last.chain, last.seq + 1,
       (SELECT e.hash FROM entries e WHERE e.chain = last.chain AND e.seq = last.seq LIMIT 1)
FROM last WHERE true;

CREATE TRIGGER audit_chain_head_row AFTER INSERT ON audit_events
WHEN NEW.chain_id IS NOT NULL
BEGIN
    INSERT INTO audit_chain_heads (chain_id, size, hash)
    VALUES (NEW.chain_id, NEW.chain_seq + 1, NEW.chain_hash)
    ON CONFLICT (chain_id) DO UPDATE SET size = excluded.size, hash = excluded.hash
    WHERE excluded.size > audit_chain_heads.size;
END;

-- Rows written before chains existed are adopted by an UPDATE.
CREATE TRIGGER audit_chain_head_adopted AFTER UPDATE OF chain_seq ON audit_events
WHEN NEW.chain_id IS NOT NULL
BEGIN
    INSERT INTO audit_chain_heads (chain_id, size, hash)
    VALUES (NEW.chain_id, NEW.chain_seq + 1, NEW.chain_hash)
    ON CONFLICT (chain_id) DO UPDATE SET size = excluded.size, hash = excluded.hash
    WHERE excluded.size > audit_chain_heads.size;
END;

CREATE TRIGGER audit_chain_head_outcome AFTER UPDATE OF outcome_seq ON audit_events
WHEN NEW.outcome_chain IS NOT NULL
BEGIN
    INSERT INTO audit_chain_heads (chain_id, size, hash)
    VALUES (NEW.outcome_chain, NEW.outcome_seq + 1, NEW.outcome_hash)
    ON CONFLICT (chain_id) DO UPDATE SET size = excluded.size, hash = excluded.hash
    WHERE excluded.size > audit_chain_heads.size;
END;

CREATE TRIGGER audit_chain_head_mark AFTER INSERT ON audit_chain_marks
BEGIN
    INSERT INTO audit_chain_heads (chain_id, size, hash)
    VALUES (NEW.chain_id, NEW.seq + 1, NEW.hash)
    ON CONFLICT (chain_id) DO UPDATE SET size = excluded.size, hash = excluded.hash
    WHERE excluded.size > audit_chain_heads.size;
END;

DROP INDEX audit_events_chain;
DROP INDEX audit_events_outcome_chain;
