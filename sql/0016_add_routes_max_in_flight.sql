-- A route's bulkhead: at most this many of its requests in flight on one
-- instance (over it: 503 route_busy, nothing charged). NULL = the default,
-- half the instance's handler threads, which depends on the instance.
ALTER TABLE routes ADD COLUMN max_in_flight INT UNSIGNED NULL;
