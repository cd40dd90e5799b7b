-- `credit.exhausted` is sent once when a charge or a hold is refused for
-- credit, then not again until the credit comes back: set by the refusal
-- that sends it, cleared by any change that raises the credit (a top-up, a
-- refill, a refund, a released hold), as low_credit_notified is re-armed.
ALTER TABLE users
    ADD COLUMN credit_exhausted BOOLEAN NOT NULL DEFAULT FALSE;
