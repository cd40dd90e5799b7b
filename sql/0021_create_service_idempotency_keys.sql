-- Idempotency-Key of the service API (/v1/charge, /v1/holds…): a key
-- belongs to the service that sent it, whichever user the request was for.
-- The row is inserted first in the request's transaction, so a second
-- request with the same key waits for the first to commit and then sees
-- its answer (`status` and `answer`, replayed) or, for another request
-- (`fingerprint`: method, path, query, body), is refused with 422.
CREATE TABLE service_idempotency_keys (
    service_id  BIGINT UNSIGNED   NOT NULL,
    idem_key    VARCHAR(128)      CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    fingerprint CHAR(64)          CHARACTER SET ascii NOT NULL,
    status      SMALLINT UNSIGNED NOT NULL,
    answer      MEDIUMTEXT        NOT NULL,
    created_at  DATETIME(3)       NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (service_id, idem_key),
    KEY service_idempotency_keys_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
