-- A fixed-price gateway charge whose answer is not settled yet: written in
-- the charge's own transaction, deleted once the answer was billable
-- (batched) or refunded. A row left past `expires_at` (its instance died,
-- or the refund could not be written) is refunded by the
-- refund-unsettled job, so a charge for an answer never billed does not
-- outlive a crash; a billable answer whose confirmation was lost is
-- refunded too: an under-charge, never an over-charge.
CREATE TABLE route_charges (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id    BIGINT UNSIGNED NOT NULL,
    amount     BIGINT          NOT NULL,
    day        DATE            NOT NULL,
    endpoint   VARCHAR(140)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    idem_key   VARCHAR(270)    CHARACTER SET ascii COLLATE ascii_bin NULL,
    expires_at DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    KEY route_charges_expiry (expires_at),
    CONSTRAINT route_charges_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
