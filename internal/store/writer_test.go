package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// events is a log of what the writer did, in the order it did it: "fn NAME" when
// a write ran, "hook NAME" when one of its commit hooks ran. Writes and hooks
// both run on the writer goroutine; the lock is for the test's readers.
type events struct {
	mu  sync.Mutex
	log []string
	txs map[string]any // the transaction each write last ran in
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// only returns the entries of the log that start with prefix, without it.
func (e *events) only(prefix string) []string {
	var out []string
	for _, s := range e.snapshot() {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			out = append(out, rest)
		}
	}
	return out
}

func (e *events) ranIn(name string, tx any) {
	e.mu.Lock()
	if e.txs == nil {
		e.txs = map[string]any{}
	}
	e.txs[name] = tx
	e.mu.Unlock()
}

// write returns a write named name that grants orgID one micro-credit and
// registers hooks hooks named name, name+"'", … ; then fail, if set, decides how
// it ends.
func (e *events) write(ctx context.Context, name, orgID string, hooks int, fail func(tx *Tx) error) func(tx *Tx) error {
	return func(tx *Tx) error {
		e.add("fn " + name)
		e.ranIn(name, tx.tx)
		for i := range hooks {
			h := name + strings.Repeat("'", i)
			tx.OnCommit(func() { e.add("hook " + h) })
		}
		if err := grant(ctx, tx, "grant-"+name, orgID, 1); err != nil {
			return err
		}
		if fail != nil {
			return fail(tx)
		}
		return nil
	}
}

// TestOnCommit: hooks run once the write's transaction has committed, in the
// order they were registered, before the write's caller returns; a write that
// rolls back runs none.
func TestOnCommit(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)

	t.Run("after the commit, in order, before Tx returns", func(t *testing.T) {
		var e events
		visible := make([]bool, 3)
		err := db.Tx(ctx, func(tx *Tx) error {
			if err := grant(ctx, tx, "grant-seen", o.ID, 1); err != nil {
				return err
			}
			for i := range 3 {
				tx.OnCommit(func() {
					// The read pool sees only committed data: the grant is there.
					var n int
					if err := db.queryRow(ctx, `SELECT count(*) FROM credit_grants WHERE id = 'grant-seen'`).Scan(&n); err == nil {
						visible[i] = n == 1
					}
					e.add(fmt.Sprintf("hook %d", i))
				})
			}
			if got := e.snapshot(); len(got) != 0 {
				t.Errorf("hooks ran inside the transaction: %q", got)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.only("hook "); !slices.Equal(got, []string{"0", "1", "2"}) {
			t.Errorf("hooks ran %q by the time Tx returned, want 0, 1, 2", got)
		}
		if !slices.Equal(visible, []bool{true, true, true}) {
			t.Errorf("the write was visible to hooks %v: a hook ran before the commit", visible)
		}
	})

	t.Run("a write that rolls back runs none of its hooks", func(t *testing.T) {
		tests := []struct {
			name string
			fail func(tx *Tx) error
		}{
			{"it returns an error", func(tx *Tx) error { return errors.New("no") }},
			{"it panics", func(tx *Tx) error { panic("boom") }},
			{"a constraint fails", func(tx *Tx) error {
				return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: now()})
			}},
			{"the balance would go below zero", func(tx *Tx) error { return grant(ctx, tx, agentd.NewID("grant"), o.ID, -1<<40) }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var e events
				name := strings.ReplaceAll(tt.name, " ", "-")
				before := balance(t, db, o.ID)
				if err := db.Tx(ctx, e.write(ctx, name, o.ID, 3, tt.fail)); err == nil {
					t.Fatal("the failing write succeeded")
				}
				if got := e.only("hook "); len(got) != 0 {
					t.Errorf("hooks of a rolled back write ran: %q", got)
				}
				if b := balance(t, db, o.ID); b != before {
					t.Errorf("balance %d, want %d: the write was kept", b, before)
				}
				// The next write runs its own hooks and nothing of the failed one's
				// (the writer reuses its requests).
				mustTx(t, db, e.write(ctx, "next-"+name, o.ID, 1, nil))
				if got := e.only("hook "); !slices.Equal(got, []string{"next-" + name}) {
					t.Errorf("hooks %q after the next write, want only its own", got)
				}
			})
		}
	})
}

// TestOnCommitBatch: in one group-committed transaction, hooks run in commit order,
// each write's hooks together, and a failing write's hooks are left out while its
// neighbours' run. Each caller returns only after its hooks ran.
func TestOnCommitBatch(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{MaxWait: 2 * time.Second})
	o := newOrg(t, db, "acme", 0)
	var e events
	const n = 24
	bad := map[int]func(tx *Tx) error{
		5:  func(tx *Tx) error { return errors.New("no") },
		11: func(tx *Tx) error { panic("boom") },
		17: func(tx *Tx) error {
			return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: now()})
		},
	}
	name := func(i int) string { return fmt.Sprintf("w%02d", i) }
	// Announce every write first so that the writer gathers them into one batch.
	exps := make([]*Expectation, n)
	for i := range exps {
		exps[i] = db.Expect()
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	hooksAtReturn := make([][]string, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = exps[i].Tx(ctx, e.write(ctx, name(i), o.ID, 2, bad[i]))
			hooksAtReturn[i] = e.only("hook ")
		})
	}
	wg.Wait()

	for i := range n {
		if e.txs[name(i)] != e.txs[name(0)] {
			t.Fatalf("writes were not grouped into one transaction (write %d in another); the test proves nothing", i)
		}
	}
	// Commit order is the order the writer ran the writes in.
	var want []string
	for _, s := range e.only("fn ") {
		var i int
		fmt.Sscanf(s, "w%02d", &i)
		if bad[i] == nil {
			want = append(want, s, s+"'")
		}
	}
	if got := e.only("hook "); !slices.Equal(got, want) {
		t.Errorf("hooks ran\n%q\nwant, in commit order without the failed writes',\n%q", got, want)
	}
	for i := range n {
		if (errs[i] != nil) != (bad[i] != nil) {
			t.Errorf("write %d: err = %v", i, errs[i])
		}
		if bad[i] == nil && !slices.Contains(hooksAtReturn[i], name(i)+"'") {
			t.Errorf("write %d returned before its hooks ran (%q had run)", i, hooksAtReturn[i])
		}
	}
	if b := balance(t, db, o.ID); b != agentd.Micros(n-len(bad)) {
		t.Errorf("balance %d, want %d", b, n-len(bad))
	}
}

// TestOnCommitAcrossBatches: with many small batches, each transaction's hooks run
// after its writes and before the next transaction's writes, in commit order; a
// write's hooks run exactly once.
func TestOnCommitAcrossBatches(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{MaxBatch: 3})
	o := newOrg(t, db, "acme", 0)
	var e events
	const n = 90
	failing := func(i int) bool { return i < n && i%7 == 3 }
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		var fail func(tx *Tx) error
		if failing(i) {
			fail = func(tx *Tx) error { return errors.New("no") }
		}
		wg.Go(func() { errs[i] = db.Tx(ctx, e.write(ctx, fmt.Sprint(i), o.ID, 1, fail)) })
	}
	wg.Wait()
	// Then a few in a row from one goroutine: their hooks run in call order.
	for i := n; i < n+5; i++ {
		mustTx(t, db, e.write(ctx, fmt.Sprint(i), o.ID, 1, nil))
	}

	// Cut the log into transactions, and check each one's hooks follow its writes.
	txOf := func(name string) any { return e.txs[name] }
	log := e.snapshot()
	batches := 0
	for len(log) > 0 {
		fns, hooks := []string{}, []string{}
		tx := txOf(strings.TrimPrefix(log[0], "fn "))
		for len(log) > 0 && strings.HasPrefix(log[0], "fn ") && txOf(strings.TrimPrefix(log[0], "fn ")) == tx {
			fns = append(fns, strings.TrimPrefix(log[0], "fn "))
			log = log[1:]
		}
		for len(log) > 0 && strings.HasPrefix(log[0], "hook ") {
			hooks = append(hooks, strings.TrimPrefix(log[0], "hook "))
			log = log[1:]
		}
		if len(fns) == 0 {
			t.Fatalf("hooks %q follow no write of theirs; log left: %q", hooks, log)
		}
		batches++
		var want []string
		for _, f := range fns {
			var i int
			fmt.Sscan(f, &i)
			if !failing(i) {
				want = append(want, f)
			}
		}
		if !slices.Equal(hooks, want) {
			t.Errorf("transaction of writes %q ran hooks %q, want %q", fns, hooks, want)
		}
	}
	if batches < 5 {
		t.Errorf("%d transactions for %d writes with MaxBatch 3", batches, n)
	}
	seen := map[string]int{}
	for _, h := range e.only("hook ") {
		seen[h]++
	}
	for i := range n + 5 {
		want := 1
		if failing(i) {
			want = 0
			if errs[i] == nil {
				t.Errorf("failing write %d succeeded", i)
			}
		} else if i < n && errs[i] != nil {
			t.Errorf("write %d: %v", i, errs[i])
		}
		if seen[fmt.Sprint(i)] != want {
			t.Errorf("hooks of write %d ran %d times, want %d", i, seen[fmt.Sprint(i)], want)
		}
	}
	if got, want := e.only("hook ")[len(e.only("hook "))-5:], []string{"90", "91", "92", "93", "94"}; !slices.Equal(got, want) {
		t.Errorf("hooks of writes in a row ran %q, want %q", got, want)
	}
}

// TestOnCommitBrokenTransaction: when one write makes SQLite abandon the whole
// transaction, nothing of the batch committed and no hook of it ran; the writer
// redoes each write alone, and then each surviving write's hooks run exactly once,
// in order, while the breaking write's never do.
func TestOnCommitBrokenTransaction(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		opts Options
		bad  func(tx *Tx, orgID string) error
		// redo: the batch must have been redone write by write (the bad write broke
		// the transaction rather than failing in its savepoint).
		redo bool
	}{
		{"ON CONFLICT ROLLBACK", Options{MaxWait: time.Second}, func(tx *Tx, orgID string) error {
			_, err := tx.exec(ctx, `INSERT OR ROLLBACK INTO orgs (id, name, balance, created_at) VALUES (?, 'acme', 0, 1)`, agentd.NewID("org"))
			return err
		}, true},
		{"database full", Options{MaxWait: time.Second, MaxBytes: 256 << 10}, func(tx *Tx, orgID string) error {
			_, err := tx.exec(ctx, `INSERT INTO credit_grants (id, org_id, amount, key_id, created_at)
				WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000)
				SELECT 'big'||x, ?, 0, hex(randomblob(250)), 1 FROM c`, orgID)
			return err
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t, tt.opts)
			o := newOrg(t, db, "acme", 0)
			var e events
			// One batch, in this order: a good write, the bad one, a good write.
			errs := batchInOrder(t, db,
				e.write(ctx, "before", o.ID, 2, nil),
				e.write(ctx, "bad", o.ID, 2, func(tx *Tx) error { return tt.bad(tx, o.ID) }),
				e.write(ctx, "after", o.ID, 2, nil),
			)
			if errs[1] == nil {
				t.Fatal("the bad write succeeded; the test proves nothing")
			}
			ran := e.only("fn ")
			redone := slices.Equal(ran, []string{"before", "bad", "before", "bad", "after"})
			if tt.redo && !redone {
				t.Fatalf("writes ran %q: the transaction was not redone write by write; the test proves nothing", ran)
			}
			t.Logf("writes ran %q", ran)
			if errs[0] != nil || errs[2] != nil {
				t.Errorf("the good writes failed: %v, %v", errs[0], errs[2])
			}
			if got, want := e.only("hook "), []string{"before", "before'", "after", "after'"}; !slices.Equal(got, want) {
				t.Errorf("hooks ran %q, want %q: each surviving write's exactly once, in order", got, want)
			}
			if b := balance(t, db, o.ID); b != 2 {
				t.Errorf("balance %d, want 2 (the good writes, once each)", b)
			}
			if n := count(t, db, `SELECT count(*) FROM credit_grants WHERE id = 'grant-bad'`); n != 0 {
				t.Errorf("the bad write's grant is stored")
			}
		})
	}
}

// TestOnCommitFailedCommit: when the commit itself fails, no write of the
// transaction is kept, every caller is told, and no hook runs; the writer goes on.
func TestOnCommitFailedCommit(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{MaxWait: time.Second})
	o := newOrg(t, db, "acme", 0)
	// A deferred foreign key is checked only at COMMIT.
	mustTx(t, db, func(tx *Tx) error {
		_, err := tx.exec(ctx, `CREATE TABLE deferred_fk (org_id TEXT REFERENCES orgs(id) DEFERRABLE INITIALLY DEFERRED)`)
		return err
	})
	var e events
	// One batch, in this order.
	errs := batchInOrder(t, db,
		e.write(ctx, "before", o.ID, 1, nil),
		e.write(ctx, "orphan", o.ID, 1, func(tx *Tx) error {
			_, err := tx.exec(ctx, `INSERT INTO deferred_fk (org_id) VALUES ('org-nope')`)
			return err
		}),
		e.write(ctx, "after", o.ID, 1, nil),
	)
	if e.txs["before"] != e.txs["orphan"] || e.txs["after"] != e.txs["orphan"] {
		t.Fatal("the writes were not grouped into one transaction; the test proves nothing")
	}
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "commit") {
			t.Errorf("write %d: err = %v, want the failed commit", i, err)
		}
	}
	if got := e.only("hook "); len(got) != 0 {
		t.Errorf("hooks of an uncommitted transaction ran: %q", got)
	}
	if b := balance(t, db, o.ID); b != 0 {
		t.Errorf("balance %d, want 0: nothing committed", b)
	}
	// The write connection is clean: the next write commits and runs its hooks.
	mustTx(t, db, e.write(ctx, "next", o.ID, 1, nil))
	if got := e.only("hook "); !slices.Equal(got, []string{"next"}) {
		t.Errorf("hooks %q, want the next write's", got)
	}
}
