-- agentd's schema on PostgreSQL: the SQLite schema as of its migration 0005, in
-- PostgreSQL's types. Times are Unix microseconds (UTC) and money integer
-- micro-credits, both BIGINT; flags are BOOLEAN.

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    balance    BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at BIGINT NOT NULL
);

-- Every change of a balance other than a run's charge: grants and corrections.
CREATE TABLE credit_grants (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    amount     BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX credit_grants_org ON credit_grants(org_id, created_at);

-- A key with a budget (micro-credits) spends at most that much per period
-- ('none': ever; 'daily', 'monthly': UTC calendar periods), summed from usage_daily.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id),
    name          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    budget        BIGINT CHECK (budget IS NULL OR budget >= 0),
    budget_period TEXT NOT NULL DEFAULT 'none'
);
CREATE INDEX api_keys_org ON api_keys(org_id);

CREATE TABLE agents (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs(id),
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    active              BOOLEAN NOT NULL DEFAULT TRUE,
    creator             TEXT NOT NULL,
    conversation_saving BOOLEAN NOT NULL DEFAULT TRUE,
    version             BIGINT NOT NULL,
    usage_count         BIGINT NOT NULL DEFAULT 0,
    failed_count        BIGINT NOT NULL DEFAULT 0,
    total_latency_ms    BIGINT NOT NULL DEFAULT 0,
    last_used           BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
-- Agents are listed a page at a time in creation order.
CREATE INDEX agents_org_created ON agents(org_id, created_at, id);

CREATE TABLE agent_versions (
    agent_id       TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    model          TEXT NOT NULL,
    instructions   TEXT NOT NULL,
    demonstrations TEXT NOT NULL, -- JSON list of {input, output}
    temperature    DOUBLE PRECISION NOT NULL,
    max_tokens     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (agent_id, version)
);

-- One row per exchange of a session, keyed by (org, owner, agent, session id).
CREATE TABLE session_turns (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id            TEXT NOT NULL,
    owner             TEXT NOT NULL,
    agent_id          TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    session_id        TEXT NOT NULL,
    run_id            TEXT NOT NULL UNIQUE,
    user_message      TEXT NOT NULL,
    assistant_message TEXT NOT NULL,
    user_tokens       BIGINT NOT NULL,
    assistant_tokens  BIGINT NOT NULL,
    input_tokens      BIGINT NOT NULL,
    output_tokens     BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX session_turns_key ON session_turns(org_id, agent_id, owner, session_id, id);
CREATE INDEX session_turns_created ON session_turns(created_at);

-- One row per run, successful or not. Kept when an agent is deleted: it is the
-- money record.
CREATE TABLE ledger (
    run_id          TEXT PRIMARY KEY,
    created_at      BIGINT NOT NULL,
    org_id          TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    owner           TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    agent_version   BIGINT NOT NULL,
    session_id      TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model           TEXT NOT NULL,
    input_tokens    BIGINT NOT NULL,
    output_tokens   BIGINT NOT NULL,
    usage_source    TEXT NOT NULL,
    cost            BIGINT NOT NULL CHECK (cost >= 0),
    latency_ms      BIGINT NOT NULL,
    outcome         TEXT NOT NULL, -- ok | failed | cancelled
    error_code      TEXT NOT NULL
);
CREATE INDEX ledger_org_time_run ON ledger(org_id, created_at, run_id);

-- One row per (organization, UTC day, agent, answering model, key), kept in the
-- same transaction as each ledger row; never pruned (see the SQLite migrations).
CREATE TABLE usage_daily (
    org_id        TEXT NOT NULL,
    day           TEXT NOT NULL, -- YYYY-MM-DD, UTC
    agent_id      TEXT NOT NULL,
    agent_name    TEXT NOT NULL,
    model         TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    runs          BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost          BIGINT NOT NULL DEFAULT 0,
    latency_ms    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, agent_id, model, key_id)
);
CREATE INDEX usage_daily_key ON usage_daily(key_id, day);

-- The stored result of a finished run asked with an Idempotency-Key.
CREATE TABLE idempotency (
    org_id       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    result       TEXT NOT NULL, -- JSON of the run's result
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (org_id, key_id, idem_key)
);
CREATE INDEX idempotency_expiry ON idempotency(expires_at);

-- How far back retention has pruned each organization's ledger.
CREATE TABLE ledger_pruned (
    org_id        TEXT PRIMARY KEY,
    pruned_before BIGINT NOT NULL
);
