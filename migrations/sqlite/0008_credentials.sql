-- Service credentials kept at the gateway, per user (or service account) and
-- service: sealed with AES-256-GCM under a key derived from the gateway key,
-- whose id is stored beside each secret so keys can rotate.
CREATE TABLE credentials (
    user_email TEXT NOT NULL,
    service    TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('token', 'basic', 'oauth')),
    sealed     BLOB NOT NULL,
    key_id     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_email, service)
);
