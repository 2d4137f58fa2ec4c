-- Organization-wide EKM: an org's default external key (new projects
-- without one use it) and whether every project must be under a customer
-- key. One row per org that changed a setting; absent = defaults. The
-- composite foreign key pins the default key to the same org and keeps it
-- from being deleted while it is the default.

CREATE TABLE org_settings (
    org_id                  TEXT PRIMARY KEY REFERENCES orgs (id),
    default_external_key_id TEXT,
    ekm_required            BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    FOREIGN KEY (org_id, default_external_key_id) REFERENCES external_keys (org_id, id)
);
