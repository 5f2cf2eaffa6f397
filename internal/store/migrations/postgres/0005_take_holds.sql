-- The holds a writer batch takes, in one call (store.Tx.TakeHoldLater): each is
-- agentd_take_hold in the batch's order, so every hold sees the ones before it
-- exactly as if they had been taken one statement at a time.
CREATE FUNCTION agentd_take_holds(p_ids TEXT[], p_orgs TEXT[], p_keys TEXT[], p_amounts BIGINT[],
    p_created BIGINT[], p_expires BIGINT[], p_daily_from TEXT[], p_monthly_from TEXT[])
RETURNS TABLE (ord INT, taken BOOLEAN, key_short BOOLEAN, available BIGINT, budget BIGINT, period TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    h RECORD;
BEGIN
    FOR i IN 1 .. COALESCE(array_length(p_ids, 1), 0) LOOP
        SELECT * INTO h FROM agentd_take_hold(p_ids[i], p_orgs[i], p_keys[i], p_amounts[i],
            p_created[i], p_expires[i], p_daily_from[i], p_monthly_from[i]);
        ord := i;
        taken := h.taken;
        key_short := h.key_short;
        available := h.available;
        budget := h.budget;
        period := h.period;
        RETURN NEXT;
    END LOOP;
END
$$;
