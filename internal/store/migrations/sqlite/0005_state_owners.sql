-- One owner per number (issue "state owners").
--
-- A key's budget spent is no longer a column of its own: it is the key's charges in
-- the ledger for the budget's period, summed from usage_daily (which outlives ledger
-- retention). The columns that kept a second copy, with a period rule of their own in
-- SQL, go; the index makes the sum one range per key.
ALTER TABLE api_keys DROP COLUMN budget_spent;
ALTER TABLE api_keys DROP COLUMN budget_period_start;
CREATE INDEX usage_daily_key ON usage_daily(key_id, day);

-- Agents are listed a page at a time in creation order.
CREATE INDEX agents_org_created ON agents(org_id, created_at, id);

-- How far back retention has pruned each organization's ledger: every row created
-- at or after pruned_before is still there. agentd check compares only what the
-- ledger still holds whole. An organization never pruned has no row. In a database
-- pruned before this table existed, an organization whose rollups count more runs
-- than its ledger holds lost rows to retention: it is taken as pruned up to its
-- oldest remaining row (all of it, when no row remains).
CREATE TABLE ledger_pruned (
    org_id        TEXT PRIMARY KEY,
    pruned_before INTEGER NOT NULL
);
INSERT INTO ledger_pruned (org_id, pruned_before)
SELECT o.id, COALESCE((SELECT min(created_at) FROM ledger l WHERE l.org_id = o.id), 9223372036854775807)
FROM orgs o
WHERE (SELECT COALESCE(sum(runs + failed), 0) FROM usage_daily u WHERE u.org_id = o.id)
    > (SELECT count(*) FROM ledger l WHERE l.org_id = o.id);
