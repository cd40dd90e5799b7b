-- A route priced by its upstream: a request holds `max_cost`, is forwarded,
-- and is captured at the price the upstream states in its `cost_header`
-- answer header (NULL: X-Credit-Cost), or released when not billable.
-- NULL max_cost: the fixed `cost`, charged before forwarding, as before.
ALTER TABLE routes
    ADD COLUMN max_cost    BIGINT      NULL,
    ADD COLUMN cost_header VARCHAR(64) CHARACTER SET ascii NULL;
