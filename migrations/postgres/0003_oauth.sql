-- (PostgreSQL twin of migrations/sqlite/0012_oauth.sql.) mcpgate as the OAuth 2.1 authorization server of its /mcp. Every secret
-- (codes, tokens, sign-in links, browser sessions) is stored as its SHA-256
-- only; rows are looked up by a public id or by that digest.

-- Clients that registered themselves (RFC 7591). Pre-registered clients live
-- in the config, metadata-document clients in each gateway's bounded cache.
CREATE TABLE oauth_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

-- What a person allowed a client: one family per consent, every token of it
-- hangs here. Revoking the family (the person, refresh reuse, code replay)
-- refuses every token of it on the next request, on every replica.
CREATE TABLE oauth_families (
    id             TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    client_name    TEXT NOT NULL,
    user_email     TEXT NOT NULL,
    resource       TEXT NOT NULL,
    scope          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT,
    -- The consent form that started it: each form is answered once.
    consent_id     TEXT UNIQUE
);
CREATE INDEX oauth_families_user ON oauth_families (user_email);

-- Authorization codes: single use. The family is created with the code, so a
-- replayed code can revoke what it minted.
CREATE TABLE oauth_codes (
    code_sha256    TEXT PRIMARY KEY,
    family_id      TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    used_at        TEXT
);

CREATE TABLE oauth_access_tokens (
    id            TEXT PRIMARY KEY,
    family_id     TEXT NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT
);
CREATE INDEX oauth_access_tokens_family ON oauth_access_tokens (family_id);

-- Refresh tokens: each is used once (rotation); a used one presented again
-- revokes its family.
CREATE TABLE oauth_refresh_tokens (
    id            TEXT PRIMARY KEY,
    family_id     TEXT NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    used_at       TEXT
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens (family_id);

-- One-time sign-in links an admin mints on the CLI (installs without an IdP).
CREATE TABLE oauth_signin_links (
    id            TEXT PRIMARY KEY,
    user_email    TEXT NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    expires_at    TEXT NOT NULL,
    used_at       TEXT
);

-- A browser signed in at the gateway (consent pages), by cookie.
CREATE TABLE oauth_browser_sessions (
    id            TEXT PRIMARY KEY,
    user_email    TEXT NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    via           TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT
);
