package store

import (
	"context"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

// TestCheck: a database written only through the store is consistent, and each
// kind of damage is reported with the row it concerns.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*DB, *Org, *Run) {
		db := openDB(t, Options{})
		o := newOrg(t, db, "acme", 1_000_000)
		a := newAgent(t, db, o.ID, "bot")
		var last *Run
		for i := range 5 {
			r := okRun(a, "alice", "s1", agentd.Micros(100*(i+1)))
			r.SaveTurn, r.UserMessage, r.Reply = true, "hi", "hello"
			r.Idem = &Idem{OrgID: o.ID, KeyID: r.KeyID, Key: r.ID, RequestHash: "h", RunID: r.ID, Result: []byte("{}"), Created: r.Created, Expires: r.Created + 1}
			mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(ctx, r) })
			last = r
		}
		if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
			t.Fatalf("consistent database: %v %q", err, problems)
		}
		return db, o, last
	}
	tests := []struct {
		name   string
		damage func(db *DB, o *Org, r *Run) string // SQL
		want   string
	}{
		{"balance without a charge", func(db *DB, o *Org, r *Run) string {
			return `UPDATE orgs SET balance = balance + 7 WHERE id = '` + o.ID + `'`
		}, "balance 0.998507 credits, but grants 1 − charges 0.0015 = 0.9985"},
		{"charge without a ledger row", func(db *DB, o *Org, r *Run) string {
			return `UPDATE usage_daily SET cost = cost + 1`
		}, "balance"},
		{"failed run that cost", func(db *DB, o *Org, r *Run) string {
			return `UPDATE ledger SET outcome = 'failed' WHERE run_id = '` + r.ID + `'`
		}, "ledger " + "RUN" + `: outcome "failed" with cost`},
		{"turn without a ledger row", func(db *DB, o *Org, r *Run) string {
			return `DELETE FROM ledger WHERE run_id = '` + r.ID + `'`
		}, "session turn of run RUN"},
		{"key budget beyond its ledger", func(db *DB, o *Org, r *Run) string {
			return `UPDATE api_keys SET budget_spent = 999999`
		}, "budget counts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, o, r := setup(t)
			if tt.name == "key budget beyond its ledger" {
				mustTx(t, db, func(tx *Tx) error {
					return tx.CreateKey(ctx, &Key{ID: r.KeyID, OrgID: o.ID, Name: "k", Owner: "alice", Prefix: "p", Hash: "h", Created: 1})
				})
			}
			if _, err := db.write.ExecContext(ctx, tt.damage(db, o, r)); err != nil {
				t.Fatal(err)
			}
			problems, err := db.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(tt.want, "RUN", r.ID)
			found := false
			for _, p := range problems {
				found = found || strings.Contains(p, want)
			}
			if !found {
				t.Errorf("problems %q, want one containing %q", problems, want)
			}
		})
	}
}
