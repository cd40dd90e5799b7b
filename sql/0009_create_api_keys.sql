-- A user's API keys (1 to 20): any key that is neither revoked nor expired
-- authenticates `<username>:<token>`. The token is never stored: token_hash
-- is its hex SHA-256, prefix its first characters for display. Keys are
-- looked up by (user, hash), so the hash is unique per user.
CREATE TABLE api_keys (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id      BIGINT UNSIGNED NOT NULL,
    label        VARCHAR(64)     NULL,
    token_hash   CHAR(64)        CHARACTER SET ascii NOT NULL,
    prefix       VARCHAR(16)     CHARACTER SET ascii NOT NULL,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    expires_at   DATETIME(3)     NULL,
    revoked_at   DATETIME(3)     NULL,
    last_used_at DATETIME(3)     NULL,
    PRIMARY KEY (id),
    UNIQUE KEY api_keys_user_hash (user_id, token_hash),
    CONSTRAINT api_keys_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
