-- The ledger of every credit change that is not a request charge (those are
-- summed in usage_daily). For every user:
--   credit = SUM(credit_events.delta) - SUM(usage_daily.credits)
CREATE TABLE credit_events (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id       BIGINT UNSIGNED NOT NULL,
    delta         BIGINT          NOT NULL,
    balance_after BIGINT          NOT NULL,
    reason        VARCHAR(32)     CHARACTER SET ascii NOT NULL,
    period        CHAR(7)         CHARACTER SET ascii NULL,
    actor         VARCHAR(128)    NOT NULL,
    created_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY credit_events_user (user_id, created_at),
    CONSTRAINT credit_events_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
