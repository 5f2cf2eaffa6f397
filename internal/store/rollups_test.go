package store

import (
	"context"
	"fmt"
	"testing"
)

// TestRollupVersionsMigration: migration 0013 recomputes from the ledger the
// rollups of the days whose ledger rows are whole, versions and histograms
// included, and keeps those of the days retention pruned (wholly or in part) as
// version 0 with an empty histogram. The test writes and prunes the ledger, puts
// usage_daily back in its shape before 0013 and opens the database again.
func TestRollupVersionsMigration(t *testing.T) {
	ctx := context.Background()
	w := newPrunedWorld(t)
	db := w.db
	if _, err := db.PruneLedger(ctx, w.cutoff, 1000); err != nil { // day 3 06:00: days 0–3 pruned, day 4 whole
		t.Fatal(err)
	}
	before := readRollups(t, db)
	mustTx(t, db, func(tx *Tx) error {
		for _, q := range []string{
			`CREATE TABLE usage_daily_old AS SELECT org_id, day, agent_id, max(agent_name) AS agent_name, model, key_id,
				sum(runs) AS runs, sum(failed) AS failed, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
				sum(cost) AS cost, sum(latency_ms) AS latency_ms, sum(cached_input_tokens) AS cached_input_tokens,
				sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens
				FROM usage_daily GROUP BY org_id, day, agent_id, model, key_id`,
			`DROP TABLE usage_daily`,
			`ALTER TABLE usage_daily_old RENAME TO usage_daily`,
			`DELETE FROM schema_migrations WHERE version = 13`,
		} {
			if _, err := tx.exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	file := db.file
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openFile(t, file, Options{})
	defer db.Close()

	want := map[rollupKey]dailyRow{}
	day4 := dayOf(usageDay0 + 4*dayMicros)
	for k, d := range before {
		if k.day < day4 {
			k.version, d.Hist = 0, LatencyHist{}
		}
		want[k] = d
	}
	got := readRollups(t, db)
	diffRollups(t, got, want)
	histRows := 0
	for k, d := range got {
		if k.day == day4 && k.version > 0 && d.Runs > 0 && d.Hist != (LatencyHist{}) {
			histRows++
		}
	}
	if histRows == 0 {
		t.Errorf("no rollup of the whole day got a version and a histogram: %v", got)
	}
	checkClean(t, db)
	if n := count(t, db, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'usage_daily_key'`); n != 1 {
		t.Errorf("usage_daily_key: %d", n)
	}
}
