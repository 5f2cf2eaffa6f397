package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// spendWorld is two keys' runs over three days from usageDay0 in organization
// org-a, and a third key's in org-b.
type spendWorld struct {
	db         *DB
	acme, beta *agentd.Org
	runs       []*Run
}

func newSpendWorld(t *testing.T) *spendWorld {
	ctx := context.Background()
	db := openDB(t, Options{})
	w := &spendWorld{db: db, acme: &agentd.Org{ID: "org-a", Name: "acme", CreatedAt: now()}, beta: &agentd.Org{ID: "org-b", Name: "beta", CreatedAt: now()}}
	for _, o := range []*agentd.Org{w.acme, w.beta} {
		mustTx(t, db, func(tx *Tx) error {
			return errors.Join(tx.CreateOrg(ctx, o), grant(ctx, tx, agentd.NewID("grant"), o.ID, 1_000_000))
		})
	}
	a := newAgent(t, db, w.acme.ID, "bot")
	b := newAgent(t, db, w.beta.ID, "bot")
	at := func(day int, hour int) time.Time {
		return fromMicros(usageDay0 + int64(day)*dayMicros + int64(hour)*3600*1_000_000)
	}
	add := func(ag *agentd.Agent, key string, when time.Time, cost agentd.Micros, outcome agentd.Outcome) {
		r := okRun(ag, "alice", "", cost)
		r.KeyID, r.CreatedAt, r.Outcome = key, when, outcome
		w.runs = append(w.runs, r)
	}
	ok, cancelled, failed := agentd.OutcomeOK, agentd.OutcomeCancelled, agentd.OutcomeFailed
	add(a, "key-a", at(0, 0), 1, ok)            // midnight of day 0
	add(a, "key-a", at(0, 23), 10, ok)          // late on day 0
	add(a, "key-a", at(1, 12), 100, ok)         // day 1
	add(a, "key-a", at(1, 13), 0, failed)       // costs nothing
	add(a, "key-a", at(2, 0), 1000, ok)         // midnight of day 2
	add(a, "key-a", at(2, 5), 20000, cancelled) // pays for what it generated
	add(a, "key-b", at(1, 1), 7, ok)
	add(b, "key-c", at(0, 1), 300_000, ok) // another organization
	recordWith(t, db, w.runs, 1)
	return w
}

// TestKeySpent: what a key was charged from a day on, from the rollups; in a
// transaction, with the transaction's own writes before it.
func TestKeySpent(t *testing.T) {
	ctx := context.Background()
	w := newSpendWorld(t)
	day := func(d int) string { return dayOf(usageDay0 + int64(d)*dayMicros) }
	tests := []struct {
		name    string
		key     string
		fromDay string
		want    agentd.Micros
	}{
		{"every day", "key-a", "", 21111},
		{"from the first day", "key-a", day(0), 21111},
		{"from day 1", "key-a", day(1), 21100},
		{"from the last day", "key-a", day(2), 21000},
		{"from a day after the last", "key-a", day(3), 0},
		{"from a day before the first", "key-a", day(-30), 21111},
		{"another key", "key-b", "", 7},
		{"another key, from after its run", "key-b", day(2), 0},
		{"a key of another organization", "key-c", day(0), 300_000},
		{"an unknown key", "key-nope", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := w.db.KeySpent(ctx, tt.key, tt.fromDay)
			if err != nil || got != tt.want {
				t.Errorf("KeySpent(%s, %q) = %d, %v; want %d", tt.key, tt.fromDay, got, err, tt.want)
			}
			var inTx agentd.Micros
			mustTx(t, w.db, func(tx *Tx) (err error) {
				inTx, err = tx.KeySpent(ctx, tt.key, tt.fromDay)
				return err
			})
			if inTx != tt.want {
				t.Errorf("Tx.KeySpent(%s, %q) = %d, want %d", tt.key, tt.fromDay, inTx, tt.want)
			}
		})
	}

	t.Run("sees the transaction's own writes, and only committed ones outside it", func(t *testing.T) {
		a, err := w.db.Agent(ctx, w.acme.ID, w.runs[0].AgentID)
		if err != nil {
			t.Fatal(err)
		}
		r := okRun(a, "alice", "", 5)
		r.KeyID, r.CreatedAt = "key-b", fromMicros(usageDay0+2*dayMicros+1)
		rollback := errors.New("roll back")
		var before, after agentd.Micros
		err = w.db.Tx(ctx, func(tx *Tx) (err error) {
			if before, err = tx.KeySpent(ctx, "key-b", day(2)); err != nil {
				return err
			}
			if _, err := tx.RecordRun(ctx, r); err != nil {
				return err
			}
			if after, err = tx.KeySpent(ctx, "key-b", day(2)); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		if before != 0 || after != 5 {
			t.Errorf("in the transaction: %d before the run, %d after; want 0 and 5", before, after)
		}
		if got, err := w.db.KeySpent(ctx, "key-b", day(2)); err != nil || got != 0 {
			t.Errorf("after the rollback: %d, %v; want 0", got, err)
		}
	})

	t.Run("outlives ledger retention", func(t *testing.T) {
		if _, err := w.db.PruneLedger(ctx, usageDay0+10*dayMicros, 1000); err != nil {
			t.Fatal(err)
		}
		if n := count(t, w.db, `SELECT count(*) FROM ledger`); n != 0 {
			t.Fatalf("%d ledger rows left", n)
		}
		for _, tt := range tests {
			if got, err := w.db.KeySpent(ctx, tt.key, tt.fromDay); err != nil || got != tt.want {
				t.Errorf("%s after pruning: KeySpent(%s, %q) = %d, %v; want %d", tt.name, tt.key, tt.fromDay, got, err, tt.want)
			}
		}
	})
}

// TestLedgerSpent: what a key's raw ledger rows sum to from an instant on.
func TestLedgerSpent(t *testing.T) {
	ctx := context.Background()
	w := newSpendWorld(t)
	at := func(day int, hour int) time.Time {
		return fromMicros(usageDay0 + int64(day)*dayMicros + int64(hour)*3600*1_000_000)
	}
	tests := []struct {
		name  string
		key   string
		since time.Time
		want  agentd.Micros
	}{
		{"since ever", "key-a", time.Time{}, 21111},
		{"since the first row, inclusive", "key-a", at(0, 0), 21111},
		{"a microsecond after it", "key-a", at(0, 0).Add(time.Microsecond), 21110},
		{"since mid-day", "key-a", at(1, 0), 21100},
		{"since midnight of the last day", "key-a", at(2, 0), 21000},
		{"since the last row", "key-a", at(2, 5), 20000},
		{"after every row", "key-a", at(2, 6), 0},
		{"in another time zone", "key-a", at(1, 0).In(time.FixedZone("X", -9*3600)), 21100},
		{"another key", "key-b", time.Time{}, 7},
		{"a key of another organization", "key-c", at(0, 0), 300_000},
		{"an unknown key", "key-nope", time.Time{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := w.db.LedgerSpent(ctx, tt.key, tt.since)
			if err != nil || got != tt.want {
				t.Errorf("LedgerSpent(%s, %v) = %d, %v; want %d", tt.key, tt.since, got, err, tt.want)
			}
		})
	}
	// While the ledger is whole, it agrees with the rollups over whole days.
	for _, key := range []string{"key-a", "key-b", "key-c"} {
		for d := range 4 {
			since := at(d, 0)
			rows, err1 := w.db.LedgerSpent(ctx, key, since)
			rollups, err2 := w.db.KeySpent(ctx, key, dayOf(micros(since)))
			if err1 != nil || err2 != nil || rows != rollups {
				t.Errorf("%s from day %d: ledger %d (%v), rollups %d (%v)", key, d, rows, err1, rollups, err2)
			}
		}
	}
}

// TestLedgerWhole: an organization's ledger is whole from an instant on unless
// retention pruned past it; each organization has its own mark, which only moves
// forward.
func TestLedgerWhole(t *testing.T) {
	ctx := context.Background()
	w := newSpendWorld(t)
	db := w.db
	fresh := newOrg(t, db, "fresh", 0) // no runs at all
	at := func(day int, hour int) time.Time {
		return fromMicros(usageDay0 + int64(day)*dayMicros + int64(hour)*3600*1_000_000)
	}
	// PruneLedger goes through organizations by id, oldest rows first. acme's rows
	// are at d0h0, d0h23, d1h1, d1h12, …; beta's one at d0h1.
	first, second := w.acme.ID, w.beta.ID
	if second < first {
		t.Fatalf("want acme (%s) first by id", first)
	}
	type expect struct {
		org   string
		since time.Time
		want  bool
	}
	cutoff := at(1, 12)
	steps := []struct {
		name          string
		before        time.Time
		limit, pruned int
		expect        []expect
	}{
		{"one row of acme", cutoff, 1, 1, []expect{
			{first, time.Time{}, false},
			{first, cutoff.Add(-time.Microsecond), false},
			{first, cutoff, true},
			{first, cutoff.Add(time.Hour), true},
			{first, cutoff.In(time.FixedZone("X", 3*3600)), true},
			{second, time.Time{}, true}, // not reached yet
		}},
		{"an earlier cutoff keeps the later mark", at(1, 0), 1, 1, []expect{
			{first, at(1, 0), false},
			{first, cutoff.Add(-time.Microsecond), false},
			{first, cutoff, true},
			{second, time.Time{}, true},
		}},
		{"the rest of both", cutoff, 100, 2, []expect{
			{first, cutoff.Add(-time.Microsecond), false},
			{first, cutoff, true},
			{second, time.Time{}, false},
			{second, cutoff.Add(-time.Microsecond), false},
			{second, cutoff, true},
		}},
		{"nothing left to prune moves no mark", at(0, 0), 100, 0, []expect{
			{first, cutoff, true},
			{second, cutoff, true},
			{second, at(0, 0), false},
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			n, err := db.PruneLedger(ctx, micros(st.before), st.limit)
			if err != nil || n != st.pruned {
				t.Fatalf("PruneLedger(%v, %d) = %d, %v; want %d", st.before, st.limit, n, err, st.pruned)
			}
			all := append(st.expect, expect{fresh.ID, time.Time{}, true}, expect{"org-nope", time.Time{}, true})
			for _, e := range all {
				got, err := db.LedgerWhole(ctx, e.org, e.since)
				if err != nil || got != e.want {
					t.Errorf("LedgerWhole(%s, %v) = %v, %v; want %v", e.org, e.since, got, err, e.want)
				}
			}
		})
	}
}
