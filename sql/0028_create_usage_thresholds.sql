-- `credit.usage_threshold`: which of 50, 80 and 100 % of the monthly
-- allowance a user's usage has crossed in a refill period (`period` is
-- users.credit_period, '' before the first refill). The key makes "once
-- per period" exact across instances: the charge that crosses inserts the
-- row and writes the event only if the insert took.
CREATE TABLE usage_thresholds (
    user_id  BIGINT UNSIGNED  NOT NULL,
    period   VARCHAR(7)       CHARACTER SET ascii NOT NULL,
    percent  TINYINT UNSIGNED NOT NULL,
    fired_at DATETIME(3)      NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (user_id, period, percent)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
