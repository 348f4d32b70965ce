-- Each chain's head (its size and last hash), kept by triggers in the same
-- statement that appends an entry, so a new chain's genesis can witness the
-- earlier chains' heads with one key lookup each. It replaces two indexes
-- on audit_events that every audited call paid for (issue 16). The heads
-- are a convenience, not evidence: `audit verify` never reads them. Each
-- replica writes its own chain, so replicas never update the same head.
CREATE TABLE audit_chain_heads (
    chain_id TEXT PRIMARY KEY,
    size     BIGINT NOT NULL,
    hash     TEXT NOT NULL
);

INSERT INTO audit_chain_heads (chain_id, size, hash)
WITH entries (chain, seq, hash) AS (
    SELECT chain_id, chain_seq, chain_hash FROM audit_events WHERE chain_id IS NOT NULL
    UNION ALL
    SELECT outcome_chain, outcome_seq, outcome_hash FROM audit_events WHERE outcome_chain IS NOT NULL
    UNION ALL
    SELECT chain_id, seq, hash FROM audit_chain_marks
)
SELECT DISTINCT ON (chain) chain, seq + 1, hash FROM entries ORDER BY chain, seq DESC;

CREATE FUNCTION audit_chain_advance(chain TEXT, next_size BIGINT, head TEXT) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO audit_chain_heads (chain_id, size, hash) VALUES (chain, next_size, head)
    ON CONFLICT (chain_id) DO UPDATE SET size = excluded.size, hash = excluded.hash
    WHERE excluded.size > audit_chain_heads.size;
$$;

CREATE FUNCTION audit_chain_head_of_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.chain_seq IS DISTINCT FROM OLD.chain_seq) THEN
        PERFORM audit_chain_advance(NEW.chain_id, NEW.chain_seq + 1, NEW.chain_hash);
    END IF;
    IF NEW.outcome_chain IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.outcome_seq IS DISTINCT FROM OLD.outcome_seq) THEN
        PERFORM audit_chain_advance(NEW.outcome_chain, NEW.outcome_seq + 1, NEW.outcome_hash);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION audit_chain_head_of_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM audit_chain_advance(NEW.chain_id, NEW.seq + 1, NEW.hash);
    RETURN NULL;
END;
$$;

CREATE TRIGGER audit_chain_head_row AFTER INSERT OR UPDATE OF chain_seq, outcome_seq ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_of_row();
CREATE TRIGGER audit_chain_head_mark AFTER INSERT ON audit_chain_marks
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_of_mark();

DROP INDEX audit_events_chain;
DROP INDEX audit_events_outcome_chain;
