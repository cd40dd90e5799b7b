-- Bank codes are stored upper-case; the service upper-cases what it is asked
-- for, which is what makes codes case-insensitive.
CREATE TABLE banks (
    code       VARCHAR(16)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    name       VARCHAR(200) NOT NULL,
    country    CHAR(2)      CHARACTER SET ascii NULL,
    bic        VARCHAR(11)  CHARACTER SET ascii NULL,
    cost       BIGINT       NOT NULL DEFAULT 1,
    data       LONGTEXT     NOT NULL DEFAULT '{}',
    created_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (code),
    CONSTRAINT banks_cost_not_negative CHECK (cost >= 0),
    CONSTRAINT banks_data_is_json CHECK (JSON_VALID(data))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
