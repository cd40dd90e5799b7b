-- Live creditgate instances, one row each, written by every heartbeat. On a
-- Galera cluster `node` is the @@wsrep_node_name the instance writes
-- through (NULL off Galera): live instances writing through more than one
-- node is the unsupported multi-writer topology, which they detect here.
CREATE TABLE instances (
    id         CHAR(32)        CHARACTER SET ascii NOT NULL,
    host       VARCHAR(255)    NOT NULL,
    pid        INT UNSIGNED    NOT NULL,
    node       VARCHAR(128)    NULL,
    started_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    seen_at    DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    KEY instances_seen (seen_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
