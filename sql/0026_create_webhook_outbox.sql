-- The outbox: one row per event and subscribed endpoint, written in the
-- same transaction as the event's cause (a charge, a refill, a hold's
-- expiry), so an event exists exactly when its cause was committed. The
-- row's id is the `webhook-id` (the same on every retry); `body` is the
-- JSON sent, fixed when the event happened. A delivery thread claims due
-- rows by setting `locked_until`/`locked_by` in a short transaction, so
-- several instances never send one row at once, and a dead instance's
-- claim simply runs out. Per endpoint and user only the oldest pending row
-- is sent (`webhook_outbox_queue`): events reach a receiver in order.
CREATE TABLE webhook_outbox (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    webhook_id      BIGINT UNSIGNED NOT NULL,
    user_id         BIGINT UNSIGNED NOT NULL,
    event_type      VARCHAR(32)     CHARACTER SET ascii NOT NULL,
    body            MEDIUMTEXT      NOT NULL,
    state           ENUM('pending', 'delivered', 'failed') NOT NULL DEFAULT 'pending',
    attempts        INT UNSIGNED    NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    locked_until    DATETIME(3)     NULL,
    locked_by       VARCHAR(64)     CHARACTER SET ascii NULL,
    last_error      VARCHAR(255)    NULL,
    created_at      DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    settled_at      DATETIME(3)     NULL,
    PRIMARY KEY (id),
    KEY webhook_outbox_due (state, next_attempt_at),
    KEY webhook_outbox_queue (webhook_id, user_id, state, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
