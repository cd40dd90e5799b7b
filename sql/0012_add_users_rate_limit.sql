-- A user's rate limit (GCRA, burst = quota): NULL quota = none. rate_tat is
-- the limiter's state, the "theoretical arrival time" in microseconds of the
-- database's clock, updated inside the charge's row-locked transaction.
ALTER TABLE users
    ADD COLUMN rate_quota       INT UNSIGNED NULL,
    ADD COLUMN rate_window_secs INT UNSIGNED NULL,
    ADD COLUMN rate_tat         BIGINT       NULL;
