-- A reservation of a user's credit, settled once: captured (the real price
-- charged, the rest freed), released, or expired (released by the
-- expire-holds job). `users.held` is the sum of `amount` over the user's
-- open holds. `service_id` names the service that made it (services are
-- revoked, never deleted); `captured`, `uncollected` and `credit_after`
-- are what the capture answered, so the same capture again answers the same.
CREATE TABLE holds (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id      BIGINT UNSIGNED NOT NULL,
    service_id   BIGINT UNSIGNED NULL,
    endpoint     VARCHAR(140)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    amount       BIGINT          NOT NULL,
    state        ENUM('open', 'captured', 'released', 'expired') NOT NULL DEFAULT 'open',
    captured     BIGINT          NULL,
    uncollected  BIGINT          NULL,
    credit_after BIGINT          NULL,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    expires_at   DATETIME(3)     NOT NULL,
    settled_at   DATETIME(3)     NULL,
    PRIMARY KEY (id),
    KEY holds_open_by_expiry (state, expires_at),
    KEY holds_user_state (user_id, state),
    CONSTRAINT holds_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT holds_amount_positive CHECK (amount > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
