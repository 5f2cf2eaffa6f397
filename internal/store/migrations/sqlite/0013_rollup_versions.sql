-- The daily rollups by agent version too, with a latency histogram.
--
-- usage_daily's key gains agent_version (the ledger's, 0 for runs of no version),
-- so that GET /api/v3/usage/summary?group_by=version can sum a version's usage
-- after retention pruned its ledger rows. The latency_* columns count the
-- successful runs by latency (store.LatencyBounds: at most 50 ms, over 50 up to
-- 100 ms, ..., over 30 s), from which performance_metrics.p95_response_time is
-- read.
--
-- Existing rollups: the days whose ledger rows are all still there (the
-- organization never pruned, or pruned before the day began, as store.CheckRollups
-- decides) are recomputed from the ledger, exactly what RecordRun would have
-- written with versions and histograms (the rollups of such days equal the sums of
-- their ledger rows; CheckRollups checks it). The days retention pruned, wholly or
-- in part, cannot be recomputed: their rows are kept as they were, as version 0
-- ("before versions were rolled up") with an empty histogram.

CREATE TABLE usage_daily_versions (
    org_id              TEXT NOT NULL,
    day                 TEXT NOT NULL, -- YYYY-MM-DD, UTC
    agent_id            TEXT NOT NULL,
    agent_version       INTEGER NOT NULL DEFAULT 0,
    agent_name          TEXT NOT NULL, -- the name of the latest run that day
    model               TEXT NOT NULL, -- the model that answered
    key_id              TEXT NOT NULL,
    runs                INTEGER NOT NULL DEFAULT 0,
    failed              INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cost                INTEGER NOT NULL DEFAULT 0, -- micro-credits
    latency_ms          INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    latency_le_50       INTEGER NOT NULL DEFAULT 0,
    latency_le_100      INTEGER NOT NULL DEFAULT 0,
    latency_le_250      INTEGER NOT NULL DEFAULT 0,
    latency_le_500      INTEGER NOT NULL DEFAULT 0,
    latency_le_1000     INTEGER NOT NULL DEFAULT 0,
    latency_le_2500     INTEGER NOT NULL DEFAULT 0,
    latency_le_5000     INTEGER NOT NULL DEFAULT 0,
    latency_le_10000    INTEGER NOT NULL DEFAULT 0,
    latency_le_30000    INTEGER NOT NULL DEFAULT 0,
    latency_gt_30000    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, agent_id, agent_version, model, key_id)
);

-- The days retention pruned: as they were, version 0.
INSERT INTO usage_daily_versions (org_id, day, agent_id, agent_version, agent_name, model, key_id, runs, failed,
    input_tokens, output_tokens, cost, latency_ms, cached_input_tokens, cache_write_tokens, reasoning_tokens)
SELECT org_id, day, agent_id, 0, agent_name, model, key_id, runs, failed,
    input_tokens, output_tokens, cost, latency_ms, cached_input_tokens, cache_write_tokens, reasoning_tokens
FROM usage_daily u
WHERE EXISTS (SELECT 1 FROM ledger_pruned p WHERE p.org_id = u.org_id
    AND p.pruned_before > CAST(strftime('%s', u.day) AS INTEGER) * 1000000);

-- The whole days: from the ledger. The bare agent_name next to max(created_at) is
-- SQLite's: it comes from the group's latest row.
INSERT INTO usage_daily_versions (org_id, day, agent_id, agent_version, agent_name, model, key_id, runs, failed, input_tokens, output_tokens, cost, latency_ms,
    cached_input_tokens, cache_write_tokens, reasoning_tokens,
    latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000,
    latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000)
SELECT org_id, day, agent_id, agent_version, agent_name, model, key_id, runs, failed, input_tokens, output_tokens, cost, latency_ms,
    cached_input_tokens, cache_write_tokens, reasoning_tokens,
    latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000,
    latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000
FROM (
    SELECT org_id, date(created_at / 1000000, 'unixepoch') AS day, agent_id, agent_version, agent_name,
        max(created_at) AS latest, model, key_id,
        sum(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END) AS runs,
        sum(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS failed,
        sum(input_tokens) AS input_tokens,
        sum(output_tokens) AS output_tokens,
        sum(cost) AS cost,
        sum(CASE WHEN outcome = 'ok' THEN latency_ms ELSE 0 END) AS latency_ms,
        sum(cached_input_tokens) AS cached_input_tokens,
        sum(cache_write_tokens) AS cache_write_tokens,
        sum(reasoning_tokens) AS reasoning_tokens,
        sum(CASE WHEN outcome = 'ok' AND latency_ms <= 50 THEN 1 ELSE 0 END) AS latency_le_50,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 50 AND latency_ms <= 100 THEN 1 ELSE 0 END) AS latency_le_100,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 100 AND latency_ms <= 250 THEN 1 ELSE 0 END) AS latency_le_250,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 250 AND latency_ms <= 500 THEN 1 ELSE 0 END) AS latency_le_500,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 500 AND latency_ms <= 1000 THEN 1 ELSE 0 END) AS latency_le_1000,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 1000 AND latency_ms <= 2500 THEN 1 ELSE 0 END) AS latency_le_2500,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 2500 AND latency_ms <= 5000 THEN 1 ELSE 0 END) AS latency_le_5000,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 5000 AND latency_ms <= 10000 THEN 1 ELSE 0 END) AS latency_le_10000,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 10000 AND latency_ms <= 30000 THEN 1 ELSE 0 END) AS latency_le_30000,
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 30000 THEN 1 ELSE 0 END) AS latency_gt_30000
    FROM ledger l
    WHERE NOT EXISTS (SELECT 1 FROM ledger_pruned p WHERE p.org_id = l.org_id
        AND p.pruned_before > l.created_at / 86400000000 * 86400000000)
    GROUP BY org_id, date(created_at / 1000000, 'unixepoch'), agent_id, agent_version, model, key_id
);

DROP TABLE usage_daily;
ALTER TABLE usage_daily_versions RENAME TO usage_daily;
CREATE INDEX usage_daily_key ON usage_daily(key_id, day);

-- performance_metrics reads the histograms now, not the ledger: nothing else
-- used this index.
DROP INDEX IF EXISTS ledger_agent_time;
