-- Keys used on a gateway route are stored scoped by the route
-- (`route:<prefix>` TAB key), so that the bank route and each route keep
-- their own answers for one key: room for a 140-character scope.
ALTER TABLE idempotency_keys MODIFY idem_key VARCHAR(270) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
