-- Daily usage rollups and an index for paging through the ledger.

-- One row per (organization, UTC day, agent, answering model, key), kept in the same
-- transaction as each ledger row (store.Tx.rollup). Raw ledger rows may be pruned
-- after the configured retention; rollups never are, so summaries stay whole.
-- runs counts successful runs, failed the failed ones; tokens and cost are summed
-- over both (a failed run costs 0); latency_ms is summed over successful runs only,
-- like agents.total_latency_ms, so latency_ms / runs is their average.
CREATE TABLE usage_daily (
    org_id        TEXT NOT NULL,
    day           TEXT NOT NULL, -- YYYY-MM-DD, UTC
    agent_id      TEXT NOT NULL,
    agent_name    TEXT NOT NULL, -- the name of the agent's latest run that day
    model         TEXT NOT NULL, -- the model that answered
    key_id        TEXT NOT NULL,
    runs          INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost          INTEGER NOT NULL DEFAULT 0, -- micro-credits
    latency_ms    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, agent_id, model, key_id)
);

-- Backfill from the ledger written before this table existed. The bare agent_name
-- next to max(created_at) is SQLite's: it comes from the group's latest row.
INSERT INTO usage_daily (org_id, day, agent_id, agent_name, model, key_id, runs, failed,
    input_tokens, output_tokens, cost, latency_ms)
SELECT org_id, day, agent_id, agent_name, model, key_id, runs, failed,
    input_tokens, output_tokens, cost, latency_ms
FROM (
    SELECT org_id, date(created_at / 1000000, 'unixepoch') AS day, agent_id, agent_name,
        max(created_at) AS latest, model, key_id,
        sum(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END) AS runs,
        sum(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS failed,
        sum(input_tokens) AS input_tokens,
        sum(output_tokens) AS output_tokens,
        sum(cost) AS cost,
        sum(CASE WHEN outcome = 'ok' THEN latency_ms ELSE 0 END) AS latency_ms
    FROM ledger
    GROUP BY org_id, date(created_at / 1000000, 'unixepoch'), agent_id, model, key_id
);

-- Usage records are read in (created_at, run_id) order with a keyset cursor; with
-- run_id in the index that order needs no sort, and the cursor's tie-break on run_id
-- is an index range. It covers every use of ledger_org_time, which it replaces (one
-- index less to maintain on every run).
CREATE INDEX ledger_org_time_run ON ledger(org_id, created_at, run_id);
DROP INDEX IF EXISTS ledger_org_time;
