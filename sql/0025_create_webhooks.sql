-- Webhook endpoints (Standard Webhooks): where events are POSTed, which
-- events, and the signing secret. The secret is kept as given out
-- (`whsec_` + base64 of the key): signing needs the key itself, so unlike
-- a token it cannot be stored as a hash. Removing an endpoint deletes its
-- row; its undelivered events are marked failed in the same transaction.
CREATE TABLE webhooks (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    url        VARCHAR(2048)   NOT NULL,
    events     SET('credit.low', 'credit.exhausted', 'credit.usage_threshold',
                   'credit.refilled', 'hold.expired') CHARACTER SET ascii NOT NULL,
    secret     VARCHAR(128)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
