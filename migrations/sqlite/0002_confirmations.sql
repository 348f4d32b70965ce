-- Confirmation tokens are single use: redeeming one records its nonce here.
CREATE TABLE confirmation_nonces (
    nonce      TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    used_at    TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
