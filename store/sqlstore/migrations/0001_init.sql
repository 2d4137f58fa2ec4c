-- Initial schema. Written once for both dialects: the migration runner
-- rewrites the type name BLOB to BYTEA for PostgreSQL, nothing else.
-- Times are unix milliseconds (BIGINT). Optional references ("" in Go) are
-- NULL so that composite foreign keys, which are not checked when a column is
-- NULL, also pin them to the same org.

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE external_keys (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs (id),
    type                TEXT NOT NULL,
    name                TEXT NOT NULL,
    purpose             TEXT NOT NULL,
    params              TEXT NOT NULL,
    status              TEXT NOT NULL,
    status_code         TEXT NOT NULL,
    status_message      TEXT NOT NULL,
    status_at           BIGINT NOT NULL,
    current_kek_version TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    UNIQUE (org_id, id)
);

CREATE TABLE projects (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs (id),
    name                TEXT NOT NULL,
    external_key_id     TEXT,
    created_at          BIGINT NOT NULL,
    archived_at         BIGINT,
    current_key_version BIGINT NOT NULL,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, external_key_id) REFERENCES external_keys (org_id, id)
);
CREATE INDEX projects_by_external_key ON projects (org_id, external_key_id, id);

CREATE TABLE project_keys (
    org_id          TEXT NOT NULL,
    project_id      TEXT NOT NULL,
    version         BIGINT NOT NULL,
    external_key_id TEXT,
    kek_version     TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    wrapped         BLOB NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (org_id, project_id, version),
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, id),
    FOREIGN KEY (org_id, external_key_id) REFERENCES external_keys (org_id, id)
);
-- CountProjectKeysByKEKVersion, ExternalKeysInUse and the foreign key above.
CREATE INDEX project_keys_by_external_key ON project_keys (org_id, external_key_id, kek_version);

CREATE TABLE service_accounts (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs (id),
    project_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, id)
);
CREATE INDEX service_accounts_list ON service_accounts (org_id, project_id, id);

CREATE TABLE api_keys (
    id                 TEXT PRIMARY KEY,
    org_id             TEXT NOT NULL REFERENCES orgs (id),
    kind               TEXT NOT NULL,
    project_id         TEXT,
    service_account_id TEXT REFERENCES service_accounts (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    hash               BLOB NOT NULL UNIQUE,
    redacted_value     TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, id)
);
CREATE INDEX api_keys_list ON api_keys (org_id, kind, id);
CREATE INDEX api_keys_by_service_account ON api_keys (service_account_id);

CREATE TABLE audit_events (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    type         TEXT NOT NULL,
    effective_at BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX audit_events_list ON audit_events (org_id, id);
CREATE INDEX audit_events_by_project ON audit_events (org_id, project_id, id);
CREATE INDEX audit_events_by_time ON audit_events (effective_at);

CREATE TABLE files (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL,
    project_id      TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    bytes           BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    key_version     BIGINT NOT NULL,
    name_ciphertext BLOB NOT NULL,
    blob_key        TEXT NOT NULL,
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, id)
);
CREATE INDEX files_list ON files (org_id, project_id, id);
