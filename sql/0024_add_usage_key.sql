-- Usage gains the API key that authenticated the call, so that usage can be
-- exported (and invoiced) per key. `key_id` is 0 for "no key": the rows from
-- before this migration (all of them keep 0, shown as an empty key), and
-- calls made for a user a service names by `"user"` (`/v1/charge`, holds),
-- where no key of the user was presented.
--
-- Why 0 and not NULL: the row is upserted (INSERT … ON DUPLICATE KEY
-- UPDATE) and must hit ONE row per (user, day, endpoint, key). In a MySQL /
-- MariaDB unique key two NULLs are distinct, so a nullable key column would
-- insert a new row for every keyless call instead of adding to it; and a
-- primary key cannot hold a nullable column at all. A generated column
-- (COALESCE(key_id, 0)) in the key would work too, but it is the same 0
-- with one more column to keep right. There is no foreign key to api_keys
-- for the same reason (0 names no key); keys are revoked, never deleted.
--
-- `holds` and `route_charges` carry the key too: a hold is captured, and
-- a fixed-price gateway charge refunded, long after the request that
-- authenticated it, by calls that present no key (a service's capture, the
-- refund-unsettled job), and each must write back to the key's usage row.
--
-- Three statements: MySQL commits each ALTER on its own, so this file is not
-- atomic. They go from the least to the most used table; if one fails,
-- the earlier columns are there and `creditgate migrate` run again fails on
-- them by name (drop them by hand, then migrate).
--
-- The primary key keeps (user_id, day, …) first: `usage::last_used` reads
-- MAX(day) per user from it, and the export scans it in order.
ALTER TABLE route_charges
    ADD COLUMN key_id BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER user_id;
ALTER TABLE holds
    ADD COLUMN key_id BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER service_id;
ALTER TABLE usage_daily
    ADD COLUMN key_id BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER user_id,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (user_id, day, endpoint, key_id);
