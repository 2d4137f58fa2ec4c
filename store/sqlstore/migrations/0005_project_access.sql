-- Projects whose customer key refuses them alone: the customer's policy
-- conditions on the associated data (AWS KMS encryption context
-- ekm:project), so the key works for the org's other projects. A row means
-- denied; restoring access deletes it. Written by the transition that
-- changes it (once across replicas) and read back by every replica to
-- close the project's gate.

CREATE TABLE project_access (
    org_id          TEXT NOT NULL,
    project_id      TEXT NOT NULL,
    external_key_id TEXT NOT NULL,
    code            TEXT NOT NULL,
    message         TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (org_id, project_id),
    FOREIGN KEY (org_id, project_id) REFERENCES projects (org_id, id),
    FOREIGN KEY (org_id, external_key_id) REFERENCES external_keys (org_id, id)
);
CREATE INDEX project_access_by_project ON project_access (project_id);
