-- First outcome (as JSON) of a paid request that carried an Idempotency-Key, replayed to
-- the same user for 24 h. Written in the request transaction, under the user's
-- row lock, which is what makes two simultaneous retries charge once.
CREATE TABLE idempotency_keys (
    user_id    BIGINT UNSIGNED NOT NULL,
    idem_key   VARCHAR(128)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    outcome    MEDIUMTEXT      NOT NULL,
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (user_id, idem_key),
    KEY idempotency_keys_created (created_at),
    CONSTRAINT idempotency_keys_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
