package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store/storetest"
)

// conformance are the store's tests that hold for every dialect. TestPostgres runs
// them again on PostgreSQL: openDB gives a test running under it a schema of its
// own there. The tests left out exercise SQLite itself (its file, lock, pragmas,
// query plans and migrations from older SQLite schemas) or the savepoint per write
// that SQLite's writer uses and PostgreSQL's does not (TestPostgresOptimisticBatch
// holds PostgreSQL's writer to the same outcomes).
var conformance = []struct {
	name string
	fn   func(*testing.T)
}{
	{"Check", TestCheck},
	{"CheckWhilePruning", TestCheckWhilePruning},
	{"CheckAfterPruningFindsDamage", TestCheckAfterPruningFindsDamage},
	{"NotStorageErrorsStayTheirOwn", TestNotStorageErrorsStayTheirOwn},
	{"Ready", TestReady},
	{"KeySpent", TestKeySpent},
	{"LedgerSpent", TestLedgerSpent},
	{"LedgerWhole", TestLedgerWhole},
	{"Sessions", TestSessions},
	{"SessionsPagination", TestSessionsPagination},
	{"SessionTurns", TestSessionTurns},
	{"TurnTools", TestTurnTools},
	{"DeleteSession", TestDeleteSession},
	{"IdleSessions", TestIdleSessions},
	{"DeleteIdleSession", TestDeleteIdleSession},
	{"Orgs", TestOrgs},
	{"GrantCredits", TestGrantCredits},
	{"OrgsPage", TestOrgsPage},
	{"Versions", TestVersions},
	{"Evals", TestEvals},
	{"CreditGrantsPage", TestCreditGrantsPage},
	{"Keys", TestKeys},
	{"Agents", TestAgents},
	{"AgentsPage", TestAgentsPage},
	{"RecordRun", TestRecordRun},
	{"RecordRunAgentDeleted", TestRecordRunAgentDeleted},
	{"History", TestHistory},
	{"GroupCommitConcurrent", TestGroupCommitConcurrent},
	{"Expectation", TestExpectation},
	{"TxPanic", TestTxPanic},
	{"LedgerTotals", TestLedgerTotals},
	{"NotFoundCodes", TestNotFoundCodes},
	{"BatchOutcomesAreTruthful", TestBatchOutcomesAreTruthful},
	{"LoneAnnouncedWriteDoesNotWait", TestLoneAnnouncedWriteDoesNotWait},
	{"RollupsEqualLedger", TestRollupsEqualLedger},
	{"CheckRollupsFindsDamage", TestCheckRollupsFindsDamage},
	{"LedgerPage", TestLedgerPage},
	{"Audit", TestAudit},
	{"AuditRollsBackWithItsChange", TestAuditRollsBackWithItsChange},
	{"PruneLedger", TestPruneLedger},
	{"OnCommit", TestOnCommit},
	{"Notify", TestNotify},
}

// postgresDSN is a schema of t's own on the test server (or t is skipped).
func postgresDSN(t *testing.T) string { return storetest.Postgres(t) }

// onPostgres reports whether t runs under TestPostgres.
func onPostgres(t testing.TB) bool { return strings.HasPrefix(t.Name(), "TestPostgres/") }

// TestPostgres runs the conformance tests on PostgreSQL (AGENTD_TEST_POSTGRES).
func TestPostgres(t *testing.T) {
	storetest.Postgres(t) // skips, saying why, when no server is configured
	for _, c := range conformance {
		t.Run(c.name, c.fn)
	}
}

// TestPostgresReplicasMigrateOnce opens one schema from several replicas at once:
// every Open succeeds and each migration is recorded once.
func TestPostgresReplicasMigrateOnce(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.Postgres(t)
	const replicas = 4
	dbs := make([]*DB, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { dbs[i], errs[i] = Open(ctx, dsn, Options{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		defer dbs[i].Close()
	}
	files, err := fs.ReadDir(migrations, path.Join("migrations", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, dbs[0], `SELECT count(*) FROM schema_migrations`); n != len(files) {
		t.Errorf("%d migrations recorded, want %d (each once)", n, len(files))
	}
	want := latestMigration(postgresDialect)
	if v, err := dbs[1].schemaVersion(ctx); err != nil || v != want {
		t.Errorf("schema version %d, %v; want %d", v, err, want)
	}
}

// TestPostgresRefusesNewerSchema: a schema migrated by a newer agentd is refused
// with a message that says so, and left unchanged.
func TestPostgresRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.Postgres(t)
	db, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustTx(t, db, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 1)`)
		return err
	})
	db.Close()
	for _, opts := range []Options{{}, {ReadOnly: true}} {
		db, err := Open(ctx, dsn, opts)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%+v) of a newer schema succeeded", opts)
		}
		for _, want := range []string{"9999", fmt.Sprint(latestMigration(postgresDialect))} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open(%+v): error %q does not say %q", opts, err, want)
			}
		}
	}
}

// TestPostgresWritersOfReplicas runs the group-committing writers of three
// replicas against one organization at once: every charge lands exactly once,
// none fails on a deadlock, and the balance is the grants minus the charges.
func TestPostgresWritersOfReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.Postgres(t)
	var dbs []*DB
	for range 3 {
		db, err := Open(ctx, dsn, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	o := newOrg(t, dbs[0], "acme", 1_000_000)
	agents := []*agentd.Agent{newAgent(t, dbs[0], o.ID, "a"), newAgent(t, dbs[0], o.ID, "b")}
	const perReplica = 150
	var wg sync.WaitGroup
	errs := make(chan error, 3*perReplica)
	for i, db := range dbs {
		for j := range perReplica {
			wg.Go(func() {
				// Runs of two agents and two sessions, so that batches of different
				// replicas share rows (the balance, the agents, the day's rollups).
				r := okRun(agents[(i+j)%2], "alice", fmt.Sprint("s", j%2), 7)
				errs <- db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err })
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("RecordRun: %v", err)
		}
	}
	totals, err := dbs[2].LedgerTotals(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dbs[1].Balance(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if totals.Runs != 3*perReplica || totals.Cost != 7*3*perReplica || b != 1_000_000-totals.Cost {
		t.Errorf("%d runs costing %d, balance %d; want %d runs costing %d, balance %d",
			totals.Runs, totals.Cost, b, 3*perReplica, 7*3*perReplica, 1_000_000-7*3*perReplica)
	}
	if problems, err := dbs[0].Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check: %v %q", err, problems)
	}
}

// TestPostgresConnectionsCut terminates every connection of a replica: its next
// write fails with 503 unavailable (never a hang, never a client error), nothing
// half-written stays, and it recovers by itself once connections are possible.
func TestPostgresConnectionsCut(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.Postgres(t)
	db, err := Open(ctx, dsn, Options{ApplicationName: "agentd-cut-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o := newOrg(t, db, "acme", 1000)
	a := newAgent(t, db, o.ID, "bot")
	admin, err := Open(ctx, dsn, Options{ApplicationName: "agentd-admin"})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	terminate := func() {
		t.Helper()
		var n int
		if err := admin.read.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = 'agentd-cut-test' AND pid <> pg_backend_pid()`).Scan(&n); err != nil || n == 0 {
			t.Fatalf("terminated %d connections: %v", n, err)
		}
	}
	terminate()
	r := okRun(a, "alice", "s", 3)
	err = db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err })
	if err != nil && agentd.ErrorCode(err) != agentd.EUnavailable {
		t.Fatalf("write on a cut connection: %v (code %s), want success or unavailable", err, agentd.ErrorCode(err))
	}
	wrote := err == nil
	// The pool replaced its connections: the next write succeeds.
	r2 := okRun(a, "alice", "s", 3)
	if err := db.Tx(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r2); return err }); err != nil {
		t.Fatalf("write after the cut: %v", err)
	}
	if err := db.Ready(ctx); err != nil {
		t.Fatalf("Ready after the cut: %v", err)
	}
	totals, err := db.LedgerTotals(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := 1
	if wrote {
		want = 2
	}
	if totals.Runs != want {
		t.Errorf("%d runs recorded, want %d (the cut write committed: %v)", totals.Runs, want, wrote)
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check: %v %q", err, problems)
	}
}

// TestRebindDollar numbers placeholders and leaves string literals alone.
func TestRebindDollar(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"a = ? AND b = ?", "a = $1 AND b = $2"},
		{"x = '?' AND y = ?", "x = '?' AND y = $1"},
		{"x = 'it''s ?' AND y IN (?, ?)", "x = 'it''s ?' AND y IN ($1, $2)"},
	} {
		if got := rebindDollar(tt.in); got != tt.want {
			t.Errorf("rebindDollar(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPostgresOptimisticBatch: PostgreSQL's writer runs a batch without a
// savepoint per write; a failing write costs the batch a rerun, and every caller
// still learns the truth: the others commit with their hooks run once each, the
// failing writes leave nothing behind.
func TestPostgresOptimisticBatch(t *testing.T) {
	ctx := context.Background()
	db := batchingDB(t)
	o := newOrg(t, db, "acme", 0)
	const n = 40
	failing := func(i int) bool { return i%7 == 3 }
	exps := expectations(db, n)
	var hooks [n]atomic.Int32
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = exps[i].Tx(ctx, func(tx *Tx) error {
				tx.OnCommit(func() { hooks[i].Add(1) })
				if err := grant(ctx, tx, fmt.Sprint("grant-", i), o.ID, 1); err != nil {
					return err
				}
				if failing(i) {
					return errors.New("no")
				}
				return nil
			})
		})
	}
	wg.Wait()
	ok := 0
	for i := range n {
		if failing(i) {
			if errs[i] == nil || errs[i].Error() != "no" || hooks[i].Load() != 0 {
				t.Errorf("failing write %d: err %v, hooks %d", i, errs[i], hooks[i].Load())
			}
			continue
		}
		ok++
		if errs[i] != nil || hooks[i].Load() != 1 {
			t.Errorf("write %d: err %v, hooks ran %d times", i, errs[i], hooks[i].Load())
		}
	}
	if b := balance(t, db, o.ID); b != agentd.Micros(ok) {
		t.Errorf("balance %d, want %d", b, ok)
	}
	if got := count(t, db, `SELECT count(*) FROM credit_grants WHERE org_id = ?`, o.ID); got != ok {
		t.Errorf("%d grants recorded, want %d", got, ok)
	}
}

// TestPostgresMissingSchema: a search_path naming no schema that exists is refused
// with a message that says so.
func TestPostgresMissingSchema(t *testing.T) {
	dsn := postgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", "agentd_no_such_schema")
	u.RawQuery = q.Encode()
	db, err := Open(context.Background(), u.String(), Options{})
	if err == nil {
		db.Close()
		t.Fatal("Open succeeded on a missing schema")
	}
	if !strings.Contains(err.Error(), "names none that exists") || !strings.Contains(err.Error(), "agentd_no_such_schema") {
		t.Errorf("error %q does not say the schema is missing", err)
	}
}

// TestPostgresReadsUnavailable: reads of a replica the database refuses are 503
// unavailable, not internal errors.
func TestPostgresReadsUnavailable(t *testing.T) {
	ctx := context.Background()
	admin := storetest.Admin(t)
	role := "agentd_reads_" + strings.ToLower(agentd.NewID("r")[2:])
	admin.Exec(t, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() { admin.Exec(t, "DROP ROLE IF EXISTS "+role) })
	dsn := postgresDSN(t)
	admin.Exec(t, "ALTER SCHEMA "+storetest.SchemaOf(t, dsn)+" OWNER TO "+role)
	db, err := Open(ctx, storetest.WithUser(t, dsn, role), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o := newOrg(t, db, "acme", 5)
	admin.Exec(t, "ALTER ROLE "+role+" NOLOGIN")
	admin.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+role+"'")
	for name, read := range map[string]func() error{
		"Balance":   func() error { _, err := db.Balance(ctx, o.ID); return err },
		"Org":       func() error { _, err := db.Org(ctx, "acme"); return err },
		"KeyByHash": func() error { _, err := db.KeyByHash(ctx, "nope"); return err },
	} {
		if err := read(); agentd.ErrorCode(err) != agentd.EUnavailable {
			t.Errorf("%s with the database refusing: %v (code %q), want unavailable", name, err, agentd.ErrorCode(err))
		}
	}
	admin.Exec(t, "ALTER ROLE "+role+" LOGIN")
	if _, err := db.Balance(ctx, o.ID); err != nil {
		t.Errorf("Balance once the role may log in again: %v", err)
	}
}

// TestPostgresRecordBatches: run records made with TxRecords are written a batch
// at a time (one function call, or one statement in a transaction); a record that
// cannot be written (its organization is gone) fails alone, and every other is
// written exactly once with its charge, its rollup and its turn.
func TestPostgresRecordBatches(t *testing.T) {
	ctx := context.Background()
	db := batchingDB(t)
	o := newOrg(t, db, "acme", 1_000_000)
	a := newAgent(t, db, o.ID, "bot")
	const n = 40
	exps := expectations(db, n)
	runs := make([]*Run, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		r := okRun(a, "alice", fmt.Sprint("s", i%3), 7)
		r.Turn = &agentd.Turn{User: fmt.Sprint("u", i), Assistant: fmt.Sprint("a", i), UserTokens: 1, AssistantTokens: 1}
		r.CachedInputTokens, r.CacheWriteTokens, r.ReasoningTokens = 4, 3, 2
		// Two versions' rollups, and a histogram over several buckets.
		r.AgentVersion, r.LatencyMS = 1+i%2, []int64{30, 400, 3000, 40000, 100}[i%5]
		if i == 17 {
			r.OrgID = "org-gone" // charged to no organization: this write must fail alone
		}
		runs[i] = r
		wg.Go(func() {
			errs[i] = exps[i].TxRecords(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err })
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 17) {
			t.Errorf("record %d: %v", i, err)
		}
	}
	totals, err := db.LedgerTotals(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if totals.Runs != n-1 || totals.Cost != 7*(n-1) || balance(t, db, o.ID) != 1_000_000-7*(n-1) {
		t.Errorf("%d runs costing %d, balance %d; want %d runs costing %d", totals.Runs, totals.Cost, balance(t, db, o.ID), n-1, 7*(n-1))
	}
	if got := count(t, db, `SELECT count(*) FROM session_turns WHERE org_id = ?`, o.ID); got != n-1 {
		t.Errorf("%d turns stored, want %d", got, n-1)
	}
	if got := count(t, db, `SELECT COALESCE(sum(runs), 0) FROM usage_daily WHERE org_id = ?`, o.ID); got != n-1 {
		t.Errorf("rollups count %d runs, want %d", got, n-1)
	}
	for _, table := range []string{"ledger", "usage_daily"} {
		q := `SELECT COALESCE(sum(cached_input_tokens) * 10000 + sum(cache_write_tokens) * 100 + sum(reasoning_tokens), 0) FROM ` + table + ` WHERE org_id = ?`
		if got, want := count(t, db, q, o.ID), (n-1)*(4*10000+3*100+2); got != want {
			t.Errorf("%s: cache and reasoning tokens sum to %d, want %d", table, got, want)
		}
	}
	// Per version: its runs, and each of its runs in its latency's bucket.
	want := map[int]*LatencyHist{1: {}, 2: {}}
	for i, r := range runs {
		if i != 17 {
			want[r.AgentVersion][wantBucket(r.LatencyMS)]++
		}
	}
	for v, h := range want {
		var got LatencyHist
		dest := make([]any, len(got))
		for i := range got {
			dest[i] = &got[i]
		}
		var runs int64
		dest = append(dest, &runs)
		if err := db.queryRow(ctx, `SELECT `+histList("COALESCE(sum(", "), 0)")+`, COALESCE(sum(runs), 0) FROM usage_daily
			WHERE org_id = ? AND agent_version = ?`, o.ID, v).Scan(dest...); err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, c := range h {
			n += c
		}
		if got != *h || runs != n {
			t.Errorf("version %d: %d runs, histogram %v; want %d, %v", v, runs, got, n, *h)
		}
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check: %v %q", err, problems)
	}
}

// TestPostgresMixedBatches: a batch of run records and other writes (grants) runs
// in a transaction with the records deferred to its end; every write lands once.
func TestPostgresMixedBatches(t *testing.T) {
	ctx := context.Background()
	db := batchingDB(t)
	o := newOrg(t, db, "acme", 1_000_000)
	a := newAgent(t, db, o.ID, "bot")
	const n = 30
	exps := expectations(db, n)
	errs := make([]error, n)
	grants := 0
	var wg sync.WaitGroup
	for i := range n {
		if i%5 == 2 {
			grants++
			wg.Go(func() {
				errs[i] = exps[i].Tx(ctx, func(tx *Tx) error { return grant(ctx, tx, fmt.Sprint("grant-", i), o.ID, 100) })
			})
			continue
		}
		r := okRun(a, "alice", "s", 7)
		wg.Go(func() {
			errs[i] = exps[i].TxRecords(ctx, func(tx *Tx) error { _, err := tx.RecordRun(ctx, r); return err })
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	runs := n - grants
	want := agentd.Micros(1_000_000 + 100*grants - 7*runs)
	if b := balance(t, db, o.ID); b != want {
		t.Errorf("balance %d, want %d", b, want)
	}
	if totals, err := db.LedgerTotals(ctx, o.ID); err != nil || totals.Runs != runs {
		t.Errorf("ledger %+v, %v; want %d runs", totals, err, runs)
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check: %v %q", err, problems)
	}
}

// batchingDB is a PostgreSQL database of t's own whose writer waits up to a second
// for announced writes, so that writes announced together share batches.
func batchingDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), postgresDSN(t), Options{MaxWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// expectations announces n writes: the writer waits for all of them, so they
// share batches.
func expectations(db *DB, n int) []*Expectation {
	exps := make([]*Expectation, n)
	for i := range exps {
		exps[i] = db.Expect()
	}
	return exps
}
