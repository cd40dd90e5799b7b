-- Low-credit notice: one mail when a charge takes credit from >= low_credit
-- to below it; low_credit_notified stays set until the credit is back at or
-- above it (a top-up, a refill, a refund).
ALTER TABLE users
    ADD COLUMN low_credit          BIGINT  NULL,
    ADD COLUMN low_credit_notified BOOLEAN NOT NULL DEFAULT FALSE;
