-- The scope of each access token: a refresh may narrow it below its
-- family's (RFC 6749 §6), so it is the token's own. NULL: the family's.
ALTER TABLE oauth_access_tokens ADD COLUMN scope TEXT;
