-- The stored first answer of a billed gateway request (status and headers
-- as a JSON line, then the body), replayed to a retry with the same key and
-- request instead of forwarding it again. NULL: none stored (the bank route
-- keeps its answer in `outcome`; a gateway answer over
-- CREDITGATE_IDEMPOTENT_ANSWER_BYTES is not stored).
ALTER TABLE idempotency_keys ADD COLUMN answer MEDIUMBLOB NULL;
