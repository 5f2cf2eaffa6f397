-- Per-key budgets and idempotency records.

-- A key with a budget (micro-credits) spends at most that much per period
-- ('none': ever; 'daily', 'monthly': UTC calendar periods). budget_spent counts the
-- period that starts at budget_period_start (unix micros); a charge in a later
-- period starts the count again.
ALTER TABLE api_keys ADD COLUMN budget INTEGER CHECK (budget IS NULL OR budget >= 0);
ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'none';
ALTER TABLE api_keys ADD COLUMN budget_spent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN budget_period_start INTEGER NOT NULL DEFAULT 0;

-- The stored result of a finished run asked with an Idempotency-Key, written in
-- the run's own transaction, replayed to retries until expires_at.
CREATE TABLE idempotency (
    org_id       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    result       TEXT NOT NULL, -- JSON of the run's result
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (org_id, key_id, idem_key)
);
CREATE INDEX idempotency_expiry ON idempotency(expires_at);
