-- Replicas that cooperate (package cluster, docs/OPERATIONS.md).
--
-- changes is the change log: each row announces a change other replicas
-- must act on (a key revoked or restored, a project archived or re-keyed,
-- an API key deleted, …), written in the same transaction as the change.
-- IDs are in commit order (appenders serialise on a lock); every replica
-- reads the rows after the last one it applied. Rows are pruned after an
-- hour. The migration runner spells the id column BIGSERIAL PRIMARY KEY on
-- PostgreSQL.
CREATE TABLE changes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    org_id    TEXT NOT NULL,
    object_id TEXT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX changes_by_time ON changes (at);

-- leases: named leases held by one replica until expires_at (unix ms):
-- "probe/<external key id>" (who probes that key this interval) and
-- "leader" (who runs the background jobs). taken counts acquisitions.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    taken      BIGINT NOT NULL
);
CREATE INDEX leases_by_holder ON leases (holder);
