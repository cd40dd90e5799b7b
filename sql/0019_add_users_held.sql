-- Credit reserved by open holds (POST /v1/holds, and gateway routes priced
-- by the upstream), kept in step with the `holds` table in the same
-- row-locked transactions, so that a paid request reads what it may spend
-- (`credit - held`) from the row it locks anyway: no extra query for users
-- without holds. Held credit is still the user's (`credit` counts it) until
-- a capture charges it or a release frees it.
ALTER TABLE users
    ADD COLUMN held BIGINT NOT NULL DEFAULT 0 AFTER credit,
    ADD CONSTRAINT users_held_within_credit CHECK (held >= 0 AND held <= credit);
