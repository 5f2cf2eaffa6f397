package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// TestCheck: a database written only through the store is consistent, and each
// kind of damage is reported with the row it concerns.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*DB, *agentd.Org, *Run) {
		db := openDB(t, Options{})
		o := newOrg(t, db, "acme", 1_000_000)
		a := newAgent(t, db, o.ID, "bot")
		// Key budgets are billing's to check (they are sums of the rollups): a key
		// far over its budget is no problem of the store's.
		mustTx(t, db, func(tx *Tx) error {
			return tx.CreateKey(ctx, &agentd.Key{ID: "key-test", OrgID: o.ID, Name: "k", Owner: "alice", Prefix: "p", Hash: "h",
				CreatedAt: now(), Budget: agentd.Budget{Set: true, Limit: 1, Period: agentd.PeriodNone}})
		})
		var last *Run
		for i := range 5 {
			r := withIdem(okRun(a, "alice", "s1", agentd.Micros(100*(i+1))))
			r.Turn.User, r.Turn.Assistant = "hi", "hello"
			if !recordRun(t, db, r) {
				t.Fatal("turn not stored")
			}
			last = r
		}
		if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
			t.Fatalf("consistent database: %v %q", err, problems)
		}
		return db, o, last
	}
	tests := []struct {
		name   string
		damage func(o *agentd.Org, r *Run) string // SQL
		want   []string
	}{
		{"balance without a charge", func(o *agentd.Org, r *Run) string {
			return `UPDATE orgs SET balance = balance + 7 WHERE id = '` + o.ID + `'`
		}, []string{"balance 0.998507 credits, but grants 1 − charges 0.0015 = 0.9985"}},
		{"charge without a ledger row", func(o *agentd.Org, r *Run) string {
			return `UPDATE usage_daily SET cost = cost + 1`
		}, []string{"balance", "rollup has"}},
		{"failed run that cost", func(o *agentd.Org, r *Run) string {
			return `UPDATE ledger SET outcome = 'failed' WHERE run_id = '` + r.RunID + `'`
		}, []string{"ledger RUN: outcome \"failed\" with cost"}},
		{"unknown outcome", func(o *agentd.Org, r *Run) string {
			return `UPDATE ledger SET outcome = 'lost' WHERE run_id = '` + r.RunID + `'`
		}, []string{"ledger RUN: outcome \"lost\""}},
		{"turn and replay without a ledger row", func(o *agentd.Org, r *Run) string {
			return `DELETE FROM ledger WHERE run_id = '` + r.RunID + `'`
		}, []string{"session turn of run RUN", `idempotency record "idem-RUN" names run RUN`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, o, r := setup(t)
			if _, err := db.write.ExecContext(ctx, tt.damage(o, r)); err != nil {
				t.Fatal(err)
			}
			problems, err := db.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.want {
				want = strings.ReplaceAll(want, "RUN", r.RunID)
				found := false
				for _, p := range problems {
					found = found || strings.Contains(p, want)
				}
				if !found {
					t.Errorf("problems %q, want one containing %q", problems, want)
				}
			}
		})
	}
}

// prunedWorld is three organizations with runs over five days from usageDay0:
// six a day each, four successful (each with a session turn and an idempotency
// record), one cancelled and one failed. Its cutoff is day 3 at 06:00, so each
// organization has 20 rows older than it: more than one small prune batch.
type prunedWorld struct {
	db     *DB
	orgs   []*agentd.Org
	runs   map[string][]*Run // by org id, in time order
	cutoff int64
}

const pruneBatch = 7

func newPrunedWorld(t *testing.T) *prunedWorld {
	db := openDB(t, Options{Synchronous: "OFF"})
	w := &prunedWorld{db: db, runs: map[string][]*Run{}, cutoff: usageDay0 + 3*dayMicros + 6*3600*1_000_000}
	var all []*Run
	for i := range 3 {
		o := newOrg(t, db, fmt.Sprintf("org%d", i), 1_000_000)
		w.orgs = append(w.orgs, o)
		a := newAgent(t, db, o.ID, "bot")
		for d := range 5 {
			for j := range 6 {
				r := okRun(a, "alice", fmt.Sprintf("s%d", j%2), agentd.Micros(10+j))
				r.KeyID = fmt.Sprintf("key-%d-%d", i, j%2)
				r.CreatedAt = fromMicros(usageDay0 + int64(d)*dayMicros + int64(j)*3*3600*1_000_000 + int64(i))
				switch j {
				case 4:
					r.Outcome = agentd.OutcomeCancelled // keeps its Turn: RecordRun must drop it
				case 5:
					r.Outcome, r.Cost, r.ErrorCode = agentd.OutcomeFailed, 0, string(agentd.EInferenceFailed)
				default:
					withIdem(r)
				}
				w.runs[o.ID] = append(w.runs[o.ID], r)
				all = append(all, r)
			}
		}
	}
	record(t, db, all)
	return w
}

// check fails t with every problem db.Check reports.
func (w *prunedWorld) check(t *testing.T, when string) {
	t.Helper()
	problems, err := w.db.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", when, p)
	}
}

// marked returns the organizations that have a ledger_pruned mark.
func (w *prunedWorld) marked(t *testing.T) int {
	return count(t, w.db, `SELECT count(*) FROM ledger_pruned`)
}

// TestCheckWhilePruning is a regression test: pruning in batches smaller than an
// organization's old rows leaves some organizations pruned and others not yet,
// with session turns and idempotency records outliving their ledger rows; Check
// must report nothing after any batch.
func TestCheckWhilePruning(t *testing.T) {
	ctx := context.Background()
	w := newPrunedWorld(t)
	db := w.db
	w.check(t, "before pruning")
	turns := count(t, db, `SELECT count(*) FROM session_turns`)
	idem := count(t, db, `SELECT count(*) FROM idempotency`)
	if turns != 3*5*4 || idem != 3*5*4 {
		t.Fatalf("%d turns and %d idempotency records, want %d of each", turns, idem, 3*5*4)
	}

	for _, cutoff := range []int64{w.cutoff, usageDay0 + 5*dayMicros} {
		old := count(t, db, `SELECT count(*) FROM ledger WHERE created_at < ?`, cutoff)
		total, batches, partial := 0, 0, false
		for {
			n, err := db.PruneLedger(ctx, cutoff, pruneBatch)
			if err != nil {
				t.Fatal(err)
			}
			total += n
			batches++
			w.check(t, fmt.Sprintf("cutoff %s, after batch %d", fromMicros(cutoff), batches))
			if m := w.marked(t); m > 0 && m < len(w.orgs) {
				partial = true
			}
			if n < pruneBatch {
				break
			}
		}
		if total != old {
			t.Errorf("cutoff %s: pruned %d rows, want %d", fromMicros(cutoff), total, old)
		}
		if cutoff == w.cutoff && !partial {
			t.Error("no batch left one organization pruned and another not: the test proves nothing")
		}
		if batches < 3 {
			t.Errorf("cutoff %s: %d batches; the test wants several", fromMicros(cutoff), batches)
		}
		for _, o := range w.orgs {
			var mark int64
			if err := db.queryRow(ctx, `SELECT pruned_before FROM ledger_pruned WHERE org_id = ?`, o.ID).Scan(&mark); err != nil || mark != cutoff {
				t.Errorf("org %s: pruned_before %d, %v; want %d", o.Name, mark, err, cutoff)
			}
		}
	}
	// Turns and replays are not the ledger's to prune; they stayed, and checked clean.
	if n := count(t, db, `SELECT count(*) FROM session_turns`); n != turns {
		t.Errorf("%d turns after pruning, want %d", n, turns)
	}
	if n := count(t, db, `SELECT count(*) FROM idempotency`); n != idem {
		t.Errorf("%d idempotency records after pruning, want %d", n, idem)
	}
	if n := count(t, db, `SELECT count(*) FROM ledger`); n != 0 {
		t.Errorf("%d ledger rows left after pruning everything", n)
	}
}

// TestCheckAfterPruningFindsDamage: pruning hides only what it pruned. Damage to
// rows newer than an organization's mark, or of an organization not pruned yet,
// is still reported.
func TestCheckAfterPruningFindsDamage(t *testing.T) {
	ctx := context.Background()
	// after picks the first run of org that is at or after at and has a turn.
	after := func(w *prunedWorld, org string, at int64) *Run {
		for _, r := range w.runs[org] {
			if micros(r.CreatedAt) >= at && r.Turn != nil && r.Outcome == agentd.OutcomeOK {
				return r
			}
		}
		panic("no run")
	}
	day4 := dayOf(usageDay0 + 4*dayMicros)
	day0 := dayOf(usageDay0)
	tests := []struct {
		name string
		// damage returns SQL to run; pruned is the organization with a mark, fresh
		// one that has none yet.
		damage func(w *prunedWorld, pruned, fresh string) (sql string, run *Run)
		// want lists problems: each is substrings that one problem contains (RUN is
		// replaced by the run's id).
		want [][]string
	}{
		{"a turn newer than the mark lost its ledger row", func(w *prunedWorld, pruned, fresh string) (string, *Run) {
			r := after(w, pruned, w.cutoff)
			return `DELETE FROM ledger WHERE run_id = '` + r.RunID + `'`, r
			// The row was at the mark (org0's) or just after it, on a day that is not
			// whole: no rollup problem.
		}, [][]string{{"session turn of run RUN"}, {`idempotency record "idem-RUN" names run RUN`}}},
		{"a turn of an organization not pruned yet lost its ledger row", func(w *prunedWorld, pruned, fresh string) (string, *Run) {
			r := after(w, fresh, 0)
			return `DELETE FROM ledger WHERE run_id = '` + r.RunID + `'`, r
		}, [][]string{{"session turn of run RUN"}, {`idempotency record "idem-RUN" names run RUN`}, {"FRESH day " + day0 + " ", "but the ledger sums to"}}},
		{"a turn newer than the mark without a ledger row", func(w *prunedWorld, pruned, fresh string) (string, *Run) {
			r := after(w, pruned, w.cutoff)
			return `UPDATE session_turns SET run_id = 'run-ghost' WHERE run_id = '` + r.RunID + `'`, r
		}, [][]string{{"session turn of run run-ghost"}}},
		{"a rollup off by one on a whole day", func(w *prunedWorld, pruned, fresh string) (string, *Run) {
			return `UPDATE usage_daily SET runs = runs + 1 WHERE (org_id, day, agent_id, model, key_id) = (SELECT org_id, day, agent_id, model, key_id FROM usage_daily WHERE org_id = '` + pruned +
				`' AND day = '` + day4 + `' LIMIT 1)`, nil
		}, [][]string{{"PRUNED day " + day4 + " ", "but the ledger sums to"}}},
		{"a rollup off by one on the first day of an organization not pruned yet", func(w *prunedWorld, pruned, fresh string) (string, *Run) {
			return `UPDATE usage_daily SET latency_ms = latency_ms + 1 WHERE (org_id, day, agent_id, model, key_id) = (SELECT org_id, day, agent_id, model, key_id FROM usage_daily WHERE org_id = '` + fresh +
				`' AND day = '` + day0 + `' LIMIT 1)`, nil
		}, [][]string{{"FRESH day " + day0 + " ", "but the ledger sums to"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newPrunedWorld(t)
			if n, err := w.db.PruneLedger(ctx, w.cutoff, pruneBatch); err != nil || n != pruneBatch {
				t.Fatalf("PruneLedger = %d, %v", n, err)
			}
			var pruned, fresh string
			for _, o := range w.orgs {
				whole, err := w.db.LedgerWhole(ctx, o.ID, time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				if whole && fresh == "" {
					fresh = o.ID
				} else if !whole {
					pruned = o.ID
				}
			}
			if pruned == "" || fresh == "" {
				t.Fatalf("after one batch: pruned org %q, org not pruned %q; the test needs one of each", pruned, fresh)
			}
			w.check(t, "after one batch")
			q, r := tt.damage(w, pruned, fresh)
			if _, err := w.db.write.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
			problems, err := w.db.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.want {
				want = slices.Clone(want)
				for i := range want {
					if r != nil {
						want[i] = strings.ReplaceAll(want[i], "RUN", r.RunID)
					}
					want[i] = strings.NewReplacer("PRUNED", "org "+pruned, "FRESH", "org "+fresh).Replace(want[i])
				}
				found := false
				for _, p := range problems {
					all := true
					for _, sub := range want {
						all = all && strings.Contains(p, sub)
					}
					found = found || all
				}
				if !found {
					t.Errorf("problems %q, want one containing all of %q", problems, want)
				}
			}
			if len(problems) != len(tt.want) {
				t.Errorf("%d problems %q, want %d", len(problems), problems, len(tt.want))
			}
		})
	}
}
