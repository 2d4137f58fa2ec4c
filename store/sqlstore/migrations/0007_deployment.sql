-- The deployment this database belongs to (docs/OPERATIONS.md, "Blob
-- storage"): one row, its id random and created at the first start that
-- needs it (store.Queries.ClaimDeploymentID: insert if absent, then read,
-- so replicas starting at once on one database agree on one id). The blob
-- store holds the same id in its deployment marker; a store whose marker
-- names another deployment is refused.
CREATE TABLE deployment (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    id         TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
