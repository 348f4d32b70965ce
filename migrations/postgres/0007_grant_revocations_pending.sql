-- The revocation watcher reads pending revocations and recently ended grants
-- instead of every live grant it holds (10,000 live grants made that 20
-- lists of 500 ids per poll). The pending ones are few: a partial index.
CREATE INDEX delegation_grants_revoke_pending ON delegation_grants (id)
    WHERE revoke_requested_at IS NOT NULL AND ended_at IS NULL;
