-- A key's allow-list of agents and its expiry (agentd.Key.Agents, ExpiresAt),
-- set when it is minted or through PATCH /api/v3/keys/{id}. agents holds the
-- normalized names separated by spaces; '' allows every agent of the key's
-- organization. expires_at is in microseconds since the epoch; NULL: never.
ALTER TABLE api_keys ADD COLUMN agents TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;

-- An agent's latency percentile (performance_metrics.p95_response_time) reads
-- its successful runs of the last days from the ledger: an index range.
CREATE INDEX ledger_agent_time ON ledger(agent_id, created_at);
