-- Times are Unix microseconds (UTC); money is integer micro-credits.

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    balance    INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at INTEGER NOT NULL
);

-- Every change of a balance other than a run's charge: grants and corrections.
CREATE TABLE credit_grants (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    amount     INTEGER NOT NULL,
    key_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX credit_grants_org ON credit_grants(org_id, created_at);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_org ON api_keys(org_id);

CREATE TABLE agents (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs(id),
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    active              INTEGER NOT NULL DEFAULT 1,
    creator             TEXT NOT NULL,
    conversation_saving INTEGER NOT NULL DEFAULT 1,
    version             INTEGER NOT NULL,
    usage_count         INTEGER NOT NULL DEFAULT 0,
    failed_count        INTEGER NOT NULL DEFAULT 0,
    total_latency_ms    INTEGER NOT NULL DEFAULT 0,
    last_used           INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE agent_versions (
    agent_id       TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version        INTEGER NOT NULL,
    model          TEXT NOT NULL,
    instructions   TEXT NOT NULL,
    demonstrations TEXT NOT NULL, -- JSON list of {input, output}
    temperature    REAL NOT NULL,
    max_tokens     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (agent_id, version)
);

-- One row per exchange of a session, keyed by (org, owner, agent, session id).
CREATE TABLE session_turns (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id            TEXT NOT NULL,
    owner             TEXT NOT NULL,
    agent_id          TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    session_id        TEXT NOT NULL,
    run_id            TEXT NOT NULL UNIQUE,
    user_message      TEXT NOT NULL,
    assistant_message TEXT NOT NULL,
    user_tokens       INTEGER NOT NULL,
    assistant_tokens  INTEGER NOT NULL,
    input_tokens      INTEGER NOT NULL,
    output_tokens     INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX session_turns_key ON session_turns(org_id, agent_id, owner, session_id, id);

-- One row per run, successful or not. Kept when an agent is deleted: it is the
-- money record.
CREATE TABLE ledger (
    run_id          TEXT PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    org_id          TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    owner           TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    agent_version   INTEGER NOT NULL,
    session_id      TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model           TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    usage_source    TEXT NOT NULL,
    cost            INTEGER NOT NULL CHECK (cost >= 0),
    latency_ms      INTEGER NOT NULL,
    outcome         TEXT NOT NULL, -- ok | failed
    error_code      TEXT NOT NULL
);
CREATE INDEX ledger_org_time ON ledger(org_id, created_at);
