-- Every token that works today keeps working: each user's token hash
-- becomes their first key (imported Flask-sample tokens included). IGNORE:
-- a re-run after a crash between this and its schema_migrations row is safe.
INSERT IGNORE INTO api_keys (user_id, label, token_hash, prefix, created_at)
SELECT id, 'first', token_hash, token_prefix, created_at FROM users;
