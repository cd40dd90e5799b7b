-- One row per caller. The token is never stored: token_hash is the hex
-- SHA-256 of it, token_prefix its first characters for display and logs.
-- username uses a binary collation because `Alice` and `alice` are two users.
CREATE TABLE users (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    username       VARCHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    token_hash     CHAR(64)        CHARACTER SET ascii NOT NULL,
    token_prefix   VARCHAR(16)     CHARACTER SET ascii NOT NULL,
    credit         BIGINT          NOT NULL DEFAULT 0,
    monthly_credit BIGINT          NULL,
    refill_day     TINYINT UNSIGNED NOT NULL DEFAULT 1,
    credit_period  CHAR(7)         CHARACTER SET ascii NULL,
    email          VARCHAR(254)    NULL,
    disabled       BOOLEAN         NOT NULL DEFAULT FALSE,
    created_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY users_username (username),
    CONSTRAINT users_credit_not_negative CHECK (credit >= 0),
    CONSTRAINT users_monthly_not_negative CHECK (monthly_credit IS NULL OR monthly_credit >= 0),
    CONSTRAINT users_refill_day_range CHECK (refill_day BETWEEN 1 AND 31)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
