-- The token now lives in api_keys (moved by 0010); users.token_prefix is
-- shown from the user's newest key instead.
ALTER TABLE users DROP COLUMN token_hash, DROP COLUMN token_prefix;
