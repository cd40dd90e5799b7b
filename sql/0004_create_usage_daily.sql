-- Upserted inside the request transaction, so it always agrees with credit.
CREATE TABLE usage_daily (
    user_id  BIGINT UNSIGNED NOT NULL,
    day      DATE            NOT NULL,
    endpoint VARCHAR(64)     CHARACTER SET ascii NOT NULL,
    calls    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    credits  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, endpoint),
    KEY usage_daily_day (day),
    CONSTRAINT usage_daily_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
