-- The audit trail: one row per administrative change (keys, organizations,
-- credits, agents), written in the change's own transaction by the package that
-- owns the change. org_id is the organization the change belongs to (the
-- target's); the actor columns are '' for agentd itself (the bootstrap).
-- detail is a JSON object: never a secret.
CREATE TABLE audit_log (
    id           TEXT PRIMARY KEY,
    created_at   BIGINT NOT NULL,
    org_id       TEXT NOT NULL,
    actor_key_id TEXT NOT NULL,
    actor_owner  TEXT NOT NULL,
    actor_org_id TEXT NOT NULL,
    client_ip    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    detail       TEXT NOT NULL
);
-- The listing, newest first: an organization's rows (admins), and every row
-- (operators).
CREATE INDEX audit_log_org_created ON audit_log (org_id, created_at, id);
CREATE INDEX audit_log_created ON audit_log (created_at, id);
