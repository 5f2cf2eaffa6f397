-- A hold in one round trip (store.Tx.TakeHoldFor): the conditional updates of
-- TakeHold and the read of the key's budget that precedes them, in one function
-- call. The writer's statements run one after another, so a run's hold costing one
-- statement instead of four is most of what PostgreSQL's run path costs.
--
-- Billing decides the first rollup day of each budget period (billing.PeriodStart)
-- and passes it for both kinds of period; the function only picks the one that the
-- key's stored period names.
CREATE FUNCTION agentd_take_hold(p_id TEXT, p_org TEXT, p_key TEXT, p_amount BIGINT,
    p_created BIGINT, p_expires BIGINT, p_daily_from TEXT, p_monthly_from TEXT,
    OUT taken BOOLEAN, OUT key_short BOOLEAN, OUT available BIGINT,
    OUT budget BIGINT, OUT period TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_held  BIGINT;
    v_spent BIGINT;
BEGIN
    taken := false;
    key_short := false;
    UPDATE orgs SET held = held + p_amount WHERE id = p_org AND balance - held >= p_amount;
    IF NOT FOUND THEN
        SELECT balance - held INTO available FROM orgs WHERE id = p_org; -- NULL: no such organization
        RETURN;
    END IF;
    IF p_key <> '' THEN
        SELECT k.budget, k.budget_period, k.held INTO budget, period, v_held FROM api_keys k WHERE k.id = p_key;
        IF NOT FOUND THEN
            UPDATE orgs SET held = held - p_amount WHERE id = p_org;
            key_short := true; -- available NULL: no such key
            RETURN;
        END IF;
        IF budget IS NOT NULL THEN
            SELECT COALESCE(sum(cost), 0) INTO v_spent FROM usage_daily
            WHERE key_id = p_key AND day >= CASE period WHEN 'daily' THEN p_daily_from WHEN 'monthly' THEN p_monthly_from ELSE '' END;
            IF budget - v_held - v_spent < p_amount THEN
                UPDATE orgs SET held = held - p_amount WHERE id = p_org;
                key_short := true;
                available := budget - v_held - v_spent;
                RETURN;
            END IF;
        END IF;
        UPDATE api_keys SET held = held + p_amount WHERE id = p_key;
    END IF;
    INSERT INTO holds (id, org_id, key_id, amount, created_at, expires_at)
    VALUES (p_id, p_org, p_key, p_amount, p_created, p_expires);
    taken := true;
END
$$;
