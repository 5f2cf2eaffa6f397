-- The daily rollups by agent version too, with a latency histogram (as SQLite's
-- 0013), and agentd_write_batch writing them: it takes the rollups' agent
-- versions as its 75th argument and their histograms' buckets, in bucket order, as
-- its 76th to 85th; the rest of it is 0009's.
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

ALTER TABLE usage_daily ADD COLUMN agent_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_50 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_100 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_250 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_500 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_1000 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_2500 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_5000 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_10000 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_le_30000 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN latency_gt_30000 BIGINT NOT NULL DEFAULT 0;

-- The whole days are recomputed: their rows go, and come back from the ledger.
DELETE FROM usage_daily u
WHERE NOT EXISTS (SELECT 1 FROM ledger_pruned p WHERE p.org_id = u.org_id
    AND p.pruned_before > CAST(EXTRACT(EPOCH FROM CAST(u.day AS DATE)) AS BIGINT) * 1000000);
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey;
ALTER TABLE usage_daily ADD PRIMARY KEY (org_id, day, agent_id, agent_version, model, key_id);
INSERT INTO usage_daily (org_id, day, agent_id, agent_version, agent_name, model, key_id, runs, failed, input_tokens, output_tokens, cost, latency_ms,
    cached_input_tokens, cache_write_tokens, reasoning_tokens,
    latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000,
    latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000)
SELECT org_id, to_char(to_timestamp(created_at / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
    agent_id, agent_version, (array_agg(agent_name ORDER BY created_at DESC, run_id DESC))[1], model, key_id,
        sum(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END),
        sum(input_tokens),
        sum(output_tokens),
        sum(cost),
        sum(CASE WHEN outcome = 'ok' THEN latency_ms ELSE 0 END),
        sum(cached_input_tokens),
        sum(cache_write_tokens),
        sum(reasoning_tokens),
        sum(CASE WHEN outcome = 'ok' AND latency_ms <= 50 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 50 AND latency_ms <= 100 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 100 AND latency_ms <= 250 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 250 AND latency_ms <= 500 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 500 AND latency_ms <= 1000 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 1000 AND latency_ms <= 2500 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 2500 AND latency_ms <= 5000 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 5000 AND latency_ms <= 10000 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 10000 AND latency_ms <= 30000 THEN 1 ELSE 0 END),
        sum(CASE WHEN outcome = 'ok' AND latency_ms > 30000 THEN 1 ELSE 0 END)
FROM ledger l
WHERE NOT EXISTS (SELECT 1 FROM ledger_pruned p WHERE p.org_id = l.org_id
    AND p.pruned_before > l.created_at / 86400000000 * 86400000000)
GROUP BY org_id, 2, agent_id, agent_version, model, key_id;

-- performance_metrics reads the histograms now, not the ledger: nothing else
-- used this index.
DROP INDEX IF EXISTS ledger_agent_time;

DROP FUNCTION agentd_write_batch(BIGINT, TEXT[], TEXT[], BIGINT[], TEXT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], TEXT[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], BIGINT[], TEXT[]);
CREATE FUNCTION agentd_write_batch(
    p_lock BIGINT,
    p2 TEXT[],
    p3 TEXT[],
    p4 BIGINT[],
    p5 TEXT[],
    p6 BIGINT[],
    p7 TEXT[],
    p8 TEXT[],
    p9 TEXT[],
    p10 TEXT[],
    p11 TEXT[],
    p12 BIGINT[],
    p13 TEXT[],
    p14 TEXT[],
    p15 TEXT[],
    p16 BIGINT[],
    p17 BIGINT[],
    p18 TEXT[],
    p19 BIGINT[],
    p20 BIGINT[],
    p21 TEXT[],
    p22 TEXT[],
    p23 TEXT[],
    p24 TEXT[],
    p25 TEXT[],
    p26 TEXT[],
    p27 TEXT[],
    p28 TEXT[],
    p29 BIGINT[],
    p30 BIGINT[],
    p31 BIGINT[],
    p32 BIGINT[],
    p33 BIGINT[],
    p34 BIGINT[],
    p35 TEXT[],
    p36 BIGINT[],
    p37 BIGINT[],
    p38 BIGINT[],
    p39 BIGINT[],
    p40 TEXT[],
    p41 TEXT[],
    p42 TEXT[],
    p43 TEXT[],
    p44 TEXT[],
    p45 TEXT[],
    p46 BIGINT[],
    p47 BIGINT[],
    p48 TEXT[],
    p49 TEXT[],
    p50 TEXT[],
    p51 TEXT[],
    p52 TEXT[],
    p53 TEXT[],
    p54 TEXT[],
    p55 BIGINT[],
    p56 BIGINT[],
    p57 BIGINT[],
    p58 BIGINT[],
    p59 BIGINT[],
    p60 TEXT[],
    p61 TEXT[],
    p62 TEXT[],
    p63 BIGINT[],
    p64 BIGINT[],
    p65 BIGINT[],
    p66 TEXT[],
    p67 TEXT[],
    p68 BIGINT[],
    p69 BIGINT[],
    p70 BIGINT[],
    p71 BIGINT[],
    p72 BIGINT[],
    p73 BIGINT[],
    p74 TEXT[],
    p75 BIGINT[],
    p76 BIGINT[],
    p77 BIGINT[],
    p78 BIGINT[],
    p79 BIGINT[],
    p80 BIGINT[],
    p81 BIGINT[],
    p82 BIGINT[],
    p83 BIGINT[],
    p84 BIGINT[],
    p85 BIGINT[])
RETURNS TABLE (ord INT, taken BOOLEAN, key_short BOOLEAN, available BIGINT, budget BIGINT, period TEXT)
LANGUAGE plpgsql
-- One plan for the statements below, made once per connection: planning the
-- records' statement for every call cost more than running it.
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    v_charged BIGINT;
BEGIN
    v_charged := 0;
    IF COALESCE(cardinality($5), 0) + COALESCE(cardinality($40), 0) + COALESCE(cardinality($48), 0) > 0 THEN
    WITH l AS (INSERT INTO ledger (run_id, created_at, org_id, key_id, owner, agent_id, agent_name, agent_version,
		session_id, model_requested, model, input_tokens, output_tokens, usage_source, cost, latency_ms, outcome, error_code,
		cached_input_tokens, cache_write_tokens, reasoning_tokens)
		SELECT * FROM unnest(CAST($5 AS TEXT[]), CAST($6 AS BIGINT[]), CAST($7 AS TEXT[]), CAST($8 AS TEXT[]), CAST($9 AS TEXT[]),
			CAST($10 AS TEXT[]), CAST($11 AS TEXT[]), CAST($12 AS BIGINT[]), CAST($13 AS TEXT[]), CAST($14 AS TEXT[]), CAST($15 AS TEXT[]),
			CAST($16 AS BIGINT[]), CAST($17 AS BIGINT[]), CAST($18 AS TEXT[]), CAST($19 AS BIGINT[]), CAST($20 AS BIGINT[]),
			CAST($21 AS TEXT[]), CAST($22 AS TEXT[]), CAST($68 AS BIGINT[]), CAST($69 AS BIGINT[]), CAST($70 AS BIGINT[]))),
	i AS (INSERT INTO idempotency (org_id, key_id, idem_key, request_hash, run_id, result, created_at, expires_at)
		SELECT * FROM unnest(CAST($40 AS TEXT[]), CAST($41 AS TEXT[]), CAST($42 AS TEXT[]), CAST($43 AS TEXT[]), CAST($44 AS TEXT[]),
			CAST($45 AS TEXT[]), CAST($46 AS BIGINT[]), CAST($47 AS BIGINT[]))
		ON CONFLICT (org_id, key_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id,
		result = excluded.result, created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE idempotency.expires_at <= excluded.created_at)
	INSERT INTO session_turns (org_id, owner, agent_id, session_id, run_id, user_message, assistant_message,
		user_tokens, assistant_tokens, input_tokens, output_tokens, created_at, tools)
		SELECT u.org_id, u.owner, u.agent_id, u.session_id, u.run_id, u.user_message, u.assistant_message,
			u.user_tokens, u.assistant_tokens, u.input_tokens, u.output_tokens, u.created_at, NULLIF(u.tools, '')
		FROM unnest(CAST($48 AS TEXT[]), CAST($49 AS TEXT[]), CAST($50 AS TEXT[]), CAST($51 AS TEXT[]), CAST($52 AS TEXT[]),
			CAST($53 AS TEXT[]), CAST($54 AS TEXT[]), CAST($55 AS BIGINT[]), CAST($56 AS BIGINT[]), CAST($57 AS BIGINT[]),
			CAST($58 AS BIGINT[]), CAST($59 AS BIGINT[]), CAST($74 AS TEXT[])) WITH ORDINALITY
			AS u(org_id, owner, agent_id, session_id, run_id, user_message, assistant_message,
				user_tokens, assistant_tokens, input_tokens, output_tokens, created_at, tools, ord)
		WHERE EXISTS (SELECT 1 FROM agents WHERE agents.id = u.agent_id AND agents.org_id = u.org_id)
		ORDER BY u.ord;
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock);
    -- A batch of holds only (runs starting) skips the records' statement.
    IF COALESCE(cardinality($2), 0) + COALESCE(cardinality($5), 0) > 0 THEN
    WITH d AS (DELETE FROM holds WHERE id = ANY(CAST($2 AS TEXT[])) RETURNING org_id, key_id, amount),
	dk AS (UPDATE api_keys SET held = api_keys.held - s.amount
		FROM (SELECT key_id, sum(amount) AS amount FROM d WHERE key_id <> '' GROUP BY key_id) s WHERE api_keys.id = s.key_id),
	c AS (SELECT * FROM unnest(CAST($3 AS TEXT[]), CAST($4 AS BIGINT[])) AS c(org_id, cost)),
	h AS (SELECT org_id, sum(amount) AS amount FROM d GROUP BY org_id),
	ids AS (SELECT org_id FROM c UNION SELECT org_id FROM h),
	o AS (UPDATE orgs SET balance = orgs.balance - COALESCE(c.cost, 0), held = orgs.held - COALESCE(h.amount, 0)
		FROM ids LEFT JOIN c ON c.org_id = ids.org_id LEFT JOIN h ON h.org_id = ids.org_id
		WHERE orgs.id = ids.org_id RETURNING orgs.id, c.cost),
	r AS (INSERT INTO usage_daily (org_id, day, agent_id, agent_name, model, key_id,
		runs, failed, input_tokens, output_tokens, cost, latency_ms, cached_input_tokens, cache_write_tokens, reasoning_tokens,
		agent_version, latency_le_50, latency_le_100, latency_le_250, latency_le_500,
		latency_le_1000, latency_le_2500, latency_le_5000, latency_le_10000, latency_le_30000, latency_gt_30000)
		SELECT * FROM unnest(CAST($23 AS TEXT[]), CAST($24 AS TEXT[]), CAST($25 AS TEXT[]), CAST($26 AS TEXT[]), CAST($27 AS TEXT[]),
			CAST($28 AS TEXT[]), CAST($29 AS BIGINT[]), CAST($30 AS BIGINT[]), CAST($31 AS BIGINT[]), CAST($32 AS BIGINT[]),
			CAST($33 AS BIGINT[]), CAST($34 AS BIGINT[]), CAST($71 AS BIGINT[]), CAST($72 AS BIGINT[]), CAST($73 AS BIGINT[]),
			CAST($75 AS BIGINT[]), CAST($76 AS BIGINT[]), CAST($77 AS BIGINT[]), CAST($78 AS BIGINT[]), CAST($79 AS BIGINT[]), CAST($80 AS BIGINT[]),
			CAST($81 AS BIGINT[]), CAST($82 AS BIGINT[]), CAST($83 AS BIGINT[]), CAST($84 AS BIGINT[]), CAST($85 AS BIGINT[]))
		ON CONFLICT (org_id, day, agent_id, agent_version, model, key_id) DO UPDATE SET
		agent_name = excluded.agent_name,
		runs = usage_daily.runs + excluded.runs,
		failed = usage_daily.failed + excluded.failed,
		input_tokens = usage_daily.input_tokens + excluded.input_tokens,
		output_tokens = usage_daily.output_tokens + excluded.output_tokens,
		cost = usage_daily.cost + excluded.cost,
		latency_ms = usage_daily.latency_ms + excluded.latency_ms,
		cached_input_tokens = usage_daily.cached_input_tokens + excluded.cached_input_tokens,
		cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens,
		reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens,
		latency_le_50 = usage_daily.latency_le_50 + excluded.latency_le_50,
		latency_le_100 = usage_daily.latency_le_100 + excluded.latency_le_100,
		latency_le_250 = usage_daily.latency_le_250 + excluded.latency_le_250,
		latency_le_500 = usage_daily.latency_le_500 + excluded.latency_le_500,
		latency_le_1000 = usage_daily.latency_le_1000 + excluded.latency_le_1000,
		latency_le_2500 = usage_daily.latency_le_2500 + excluded.latency_le_2500,
		latency_le_5000 = usage_daily.latency_le_5000 + excluded.latency_le_5000,
		latency_le_10000 = usage_daily.latency_le_10000 + excluded.latency_le_10000,
		latency_le_30000 = usage_daily.latency_le_30000 + excluded.latency_le_30000,
		latency_gt_30000 = usage_daily.latency_gt_30000 + excluded.latency_gt_30000),
	a AS (UPDATE agents SET usage_count = agents.usage_count + s.ok, total_latency_ms = agents.total_latency_ms + s.latency,
		failed_count = agents.failed_count + s.failed,
		last_used = CASE WHEN s.last_used >= 0 THEN s.last_used ELSE agents.last_used END
		FROM unnest(CAST($35 AS TEXT[]), CAST($36 AS BIGINT[]), CAST($37 AS BIGINT[]), CAST($38 AS BIGINT[]), CAST($39 AS BIGINT[]))
			AS s(id, ok, latency, failed, last_used)
		WHERE agents.id = s.id)
	SELECT count(*) INTO v_charged FROM o WHERE o.cost IS NOT NULL;
    END IF;
    IF v_charged <> COALESCE(cardinality($3), 0) THEN
        RAISE EXCEPTION 'agentd: % of % organizations charged exist', v_charged, COALESCE(cardinality($3), 0);
    END IF;
    RETURN QUERY SELECT * FROM agentd_take_holds($60, $61, $62, $63, $64, $65, $66, $67);
END
$fn$;
