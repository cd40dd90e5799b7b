-- Services: the backends that call creditgate's /v1/ API with their own
-- token (never the admin token). As for api_keys, the token is never
-- stored: token_hash is its hex SHA-256 (unique: a token names one
-- service, looked up by its hash alone), prefix its first characters for
-- display. A revoked service keeps its row and its name, so that ledger
-- rows naming `service:<name>` never come to mean another backend.
-- name is ascii_bin, so `Billing` and `billing` are two services (ascii_bin
-- still pads spaces, but a name never holds one: see services::parse_name).
CREATE TABLE services (
    id         BIGINT UNSIGNED      NOT NULL AUTO_INCREMENT,
    name       VARCHAR(64)          CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    token_hash CHAR(64)             CHARACTER SET ascii NOT NULL,
    prefix     VARCHAR(16)          CHARACTER SET ascii NOT NULL,
    scopes     SET('charge','read') CHARACTER SET ascii NOT NULL,
    created_at DATETIME(3)          NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    revoked_at DATETIME(3)          NULL,
    PRIMARY KEY (id),
    UNIQUE KEY services_name (name),
    UNIQUE KEY services_token_hash (token_hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
