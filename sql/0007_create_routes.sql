-- Gateway routes: requests under `prefix` are charged `cost` and forwarded
-- to `upstream`. Paths are case-sensitive, hence the binary collation.
-- `methods` is a comma-separated list of upper-case methods; empty = any.
CREATE TABLE routes (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    prefix       VARCHAR(128)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    upstream     VARCHAR(2048)   CHARACTER SET ascii NOT NULL,
    cost         BIGINT          NOT NULL DEFAULT 1,
    methods      VARCHAR(512)    CHARACTER SET ascii NOT NULL DEFAULT '',
    charge_on    VARCHAR(8)      CHARACTER SET ascii NOT NULL DEFAULT '2xx',
    timeout_ms   INT UNSIGNED    NOT NULL DEFAULT 30000,
    strip_prefix BOOLEAN         NOT NULL DEFAULT FALSE,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY routes_prefix (prefix),
    CONSTRAINT routes_cost_not_negative CHECK (cost >= 0),
    CONSTRAINT routes_timeout_range CHECK (timeout_ms BETWEEN 1 AND 600000)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
