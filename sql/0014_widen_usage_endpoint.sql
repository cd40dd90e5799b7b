-- A gateway route's usage endpoint is `route:` plus a prefix of up to 128
-- characters, and prefixes are case-sensitive: the column was VARCHAR(64)
-- with a case-insensitive collation.
ALTER TABLE usage_daily MODIFY endpoint VARCHAR(140) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
