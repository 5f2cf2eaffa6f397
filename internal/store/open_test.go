package store

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

// tempFile is a database path in a fresh temporary directory.
func tempFile(t *testing.T) string { return filepath.Join(t.TempDir(), "agentd.db") }

func openFile(t *testing.T, file string, opts Options) *DB {
	t.Helper()
	db, err := Open(context.Background(), "sqlite:"+file, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", file, err)
	}
	return db
}

// wantLocked checks that err refuses a second writer of file held by pid.
func wantLocked(t *testing.T, err error, file string, pid int) {
	t.Helper()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	for _, want := range []string{file, fmt.Sprintf("(pid %d)", pid), file + ".lock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// TestLockSameProcess: a second read-write Open of a file is refused even in the
// process that holds it (flock locks belong to an open file description), names
// the file and the holder; Close releases the lock.
func TestLockSameProcess(t *testing.T) {
	ctx := context.Background()
	file := tempFile(t)
	db := openFile(t, file, Options{})
	o := newOrg(t, db, "acme", 5)
	for range 2 {
		second, err := Open(ctx, "sqlite:"+file, Options{})
		if err == nil {
			second.Close()
			t.Fatal("a second read-write Open of a locked file succeeded")
		}
		wantLocked(t, err, file, os.Getpid())
	}
	// The refused Opens did not disturb the holder.
	mustTx(t, db, func(tx *Tx) error { return grant(ctx, tx, "grant-after", o.ID, 1) })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	again := openFile(t, file, Options{})
	defer again.Close()
	if b := balance(t, again, o.ID); b != 6 {
		t.Errorf("balance %d after reopening, want 6", b)
	}
	if _, err := os.Stat(file + ".lock"); err != nil {
		t.Errorf("lock file: %v (it stays in place)", err)
	}
}

// TestLockHelperProcess is not a test: TestLockOtherProcess runs the test binary
// with it, to hold a database from another process.
func TestLockHelperProcess(t *testing.T) {
	file := os.Getenv("AGENTD_STORE_LOCK_HELPER")
	if file == "" {
		t.Skip("helper of TestLockOtherProcess")
	}
	db, err := Open(context.Background(), "sqlite:"+file, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	newOrg(t, db, "from-helper", 9)
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin) // until the parent closes it, or kills this process
	db.Close()
	os.Exit(0)
}

// TestLockOtherProcess: another process's Open is refused with the holder's pid,
// and the lock goes with the holder however it ends. A read-only Open works beside
// the holder and sees what it committed.
func TestLockOtherProcess(t *testing.T) {
	ctx := context.Background()
	for _, end := range []string{"closes", "is killed"} {
		t.Run("holder "+end, func(t *testing.T) {
			file := tempFile(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "AGENTD_STORE_LOCK_HELPER="+file)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "locked" {
				t.Fatalf("helper said %q, %v", line, err)
			}
			go io.Copy(io.Discard, stdout)

			_, err = Open(ctx, "sqlite:"+file, Options{})
			wantLocked(t, err, file, cmd.Process.Pid)

			ro := openFile(t, file, Options{ReadOnly: true})
			o, err := ro.Org(ctx, "from-helper")
			if err != nil || o.Balance != 9 {
				t.Errorf("read-only Org = %+v, %v; want the holder's committed organization", o, err)
			}
			ro.Close()

			if end == "closes" {
				stdin.Close()
			} else {
				cmd.Process.Kill()
			}
			cmd.Wait()
			db := openFile(t, file, Options{})
			defer db.Close()
			if _, err := db.Org(ctx, "from-helper"); err != nil {
				t.Errorf("after the holder ended: %v", err)
			}
		})
	}
}

// TestReadOnlyBesideWriter: a read-only DB opens a file a read-write DB holds
// locked, sees what it commits, takes no lock and writes nothing.
func TestReadOnlyBesideWriter(t *testing.T) {
	ctx := context.Background()
	file := tempFile(t)
	rw := openFile(t, file, Options{})
	defer rw.Close()
	o := newOrg(t, rw, "acme", 5)

	ro := openFile(t, file, Options{ReadOnly: true})
	if got, err := ro.Org(ctx, "acme"); err != nil || got.Balance != 5 {
		t.Fatalf("read-only Org = %+v, %v", got, err)
	}
	// Later commits are visible.
	mustTx(t, rw, func(tx *Tx) error { return grant(ctx, tx, "grant-later", o.ID, 2) })
	if b, err := ro.Balance(ctx, o.ID); err != nil || b != 7 {
		t.Errorf("read-only Balance = %d, %v; want 7", b, err)
	}
	if problems, err := ro.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("read-only Check = %q, %v", problems, err)
	}

	ro.Expect().Cancel() // an announcement on a read-only database is a no-op
	called := false
	fn := func(tx *Tx) error {
		called = true
		return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: "ro", CreatedAt: now()})
	}
	tests := []struct {
		name string
		err  func() error
	}{
		{"Tx", func() error { return ro.Tx(ctx, fn) }},
		{"Expectation.Tx", func() error { return ro.Expect().Tx(ctx, fn) }},
		{"Ready", func() error { return ro.Ready(ctx) }},
		{"PruneLedger", func() error { _, err := ro.PruneLedger(ctx, 1<<60, 10); return err }},
		{"SweepIdempotency", func() error { _, err := ro.SweepIdempotency(ctx, 1<<60, 10); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.err(); err == nil {
				t.Errorf("%s on a read-only database succeeded", tt.name)
			}
		})
	}
	if called {
		t.Error("a write ran on a read-only database")
	}
	if _, err := rw.Org(ctx, "ro"); agentd.ErrorCode(err) != agentd.ENotFound {
		t.Errorf("the read-only write is stored: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	// The reader took no lock: closing it left the writer's in place.
	if _, err := Open(ctx, "sqlite:"+file, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("a second writer after the reader closed: %v, want ErrLocked", err)
	}
	mustTx(t, rw, func(tx *Tx) error { return grant(ctx, tx, "grant-last", o.ID, 1) })
}

// TestReadOnlyOpen: what a read-only Open refuses, and that it changes nothing it
// refuses.
func TestReadOnlyOpen(t *testing.T) {
	ctx := context.Background()
	latest := latestMigration(sqliteDialect)
	// closed makes a closed database with an organization, lets edit change it
	// directly, and removes its lock file (a read-only Open must not need or make one).
	closed := func(t *testing.T, edit string) string {
		file := tempFile(t)
		db := openFile(t, file, Options{})
		newOrg(t, db, "acme", 5)
		if edit != "" {
			if _, err := db.write.ExecContext(ctx, edit); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(file + ".lock"); err != nil {
			t.Fatal(err)
		}
		return file
	}
	tests := []struct {
		name    string
		file    func(t *testing.T) string
		wantErr []string // substrings of the error; nil: it opens
	}{
		{"a closed database", func(t *testing.T) string { return closed(t, "") }, nil},
		{"a path that does not exist", func(t *testing.T) string { return tempFile(t) }, []string{"agentd.db", "no such file"}},
		{"a directory that does not exist", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope", "agentd.db") }, []string{"no such file"}},
		{"an empty file", func(t *testing.T) string {
			file := tempFile(t)
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return file
		}, []string{"is not an agentd database"}},
		{"not a database", func(t *testing.T) string {
			file := tempFile(t)
			if err := os.WriteFile(file, []byte(strings.Repeat("not sqlite\n", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
			return file
		}, []string{"is not an agentd database"}},
		{"an older schema", func(t *testing.T) string {
			return closed(t, fmt.Sprintf(`DELETE FROM schema_migrations WHERE version = %d`, latest))
		}, []string{fmt.Sprintf("schema version %d", latest-1), fmt.Sprintf("reads version %d", latest)}},
		{"a newer schema", func(t *testing.T) string {
			return closed(t, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 1)`)
		}, []string{"schema version 9999", fmt.Sprintf("reads version %d", latest)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file(t)
			_, statErr := os.Stat(file)
			db, err := Open(ctx, "sqlite:"+file, Options{ReadOnly: true})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if o, err := db.Org(ctx, "acme"); err != nil || o.Balance != 5 {
					t.Errorf("Org = %+v, %v", o, err)
				}
				if err := db.Ready(ctx); err == nil {
					t.Error("a read-only database reports ready for writes")
				}
			} else {
				if err == nil {
					db.Close()
					t.Fatal("Open succeeded")
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
			}
			// It created nothing it was not given.
			if _, err := os.Stat(file); os.IsNotExist(statErr) != os.IsNotExist(err) {
				t.Errorf("the file existed: %v, and after Open: %v", statErr, err)
			}
			if _, err := os.Stat(file + ".lock"); !os.IsNotExist(err) {
				t.Errorf("a read-only Open made a lock file: %v", err)
			}
		})
	}
	t.Run("it does not migrate", func(t *testing.T) {
		file := closed(t, fmt.Sprintf(`DELETE FROM schema_migrations WHERE version = %d`, latest))
		if _, err := Open(ctx, "sqlite:"+file, Options{ReadOnly: true}); err == nil {
			t.Fatal("Open succeeded")
		}
		raw, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		var v int
		if err := raw.QueryRow(`SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil || v != latest-1 {
			t.Errorf("schema version %d, %v after a refused read-only Open; want %d", v, err, latest-1)
		}
	})
}

// TestOpenRefusesNewerSchema: a read-write Open of a database a newer agentd
// migrated refuses it, saying so, and leaves it as it was.
func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	file := tempFile(t)
	db := openFile(t, file, Options{})
	o := newOrg(t, db, "acme", 5)
	mustTx(t, db, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 1)`)
		return err
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	latest := latestMigration(sqliteDialect)
	for i := range 2 { // the refused Open released its lock: the second is refused alike
		db, err := Open(ctx, "sqlite:"+file, Options{})
		if err == nil {
			db.Close()
			t.Fatal("Open of a newer schema succeeded")
		}
		if errors.Is(err, ErrLocked) {
			t.Fatalf("Open #%d: %v: the refused Open kept the lock", i+1, err)
		}
		for _, want := range []string{"9999", "newer", fmt.Sprint(latest), file} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	// Nothing was changed: without the future version, it opens as before.
	raw, err := sql.Open("sqlite", "file:"+file)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := raw.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != latest+1 {
		t.Errorf("%d rows in schema_migrations, %v; want %d", n, err, latest+1)
	}
	if _, err := raw.Exec(`DELETE FROM schema_migrations WHERE version = 9999`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	db = openFile(t, file, Options{})
	defer db.Close()
	if b := balance(t, db, o.ID); b != 5 {
		t.Errorf("balance %d, want 5", b)
	}
}

// TestStateOwnersMigration: migration 0005 drops the stored budget spending,
// adds its indexes, and marks organizations whose ledger an older agentd pruned
// (without marks) as pruned up to their oldest remaining row, so that Check does
// not report the turns and replays that outlived their rows. An organization whose
// rollups count no more runs than its ledger holds was never pruned: no mark, so
// every day of it stays checked.
func TestStateOwnersMigration(t *testing.T) {
	ctx := context.Background()
	w := newPrunedWorld(t)
	db := w.db
	empty := newOrg(t, db, "empty", 0)
	budgeted := &agentd.Key{ID: "key-budgeted", OrgID: w.orgs[0].ID, Name: "b", Owner: "o", Prefix: "p", Hash: "h",
		CreatedAt: now(), Budget: agentd.Budget{Set: true, Limit: 77, Period: agentd.PeriodMonthly}}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, budgeted) })
	// Back to the schema before 0005, then prune as agentd did then: org0 up to
	// the cutoff, org2 entirely, org1 not at all.
	mustTx(t, db, func(tx *Tx) error {
		for _, q := range []string{
			`DROP TABLE ledger_pruned`,
			`DROP INDEX usage_daily_key`,
			`DROP INDEX agents_org_created`,
			`ALTER TABLE api_keys ADD COLUMN budget_spent INTEGER NOT NULL DEFAULT 0`,
			`ALTER TABLE api_keys ADD COLUMN budget_period_start INTEGER NOT NULL DEFAULT 0`,
			`DELETE FROM schema_migrations WHERE version = 5`,
			fmt.Sprintf(`DELETE FROM ledger WHERE org_id = '%s' AND created_at < %d`, w.orgs[0].ID, w.cutoff),
			fmt.Sprintf(`DELETE FROM ledger WHERE org_id = '%s'`, w.orgs[2].ID),
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

	marks, err := db.prunedMarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		w.orgs[0].ID: w.cutoff,            // its oldest remaining row is at the cutoff
		w.orgs[2].ID: 9223372036854775807, // nothing left
	}
	if _, ok := marks[w.orgs[1].ID]; ok {
		t.Errorf("org1 was never pruned but got a mark")
	}
	if len(marks) != len(want) {
		t.Errorf("marks %v, want %v", marks, want)
	}
	for org, m := range want {
		if marks[org] != m {
			t.Errorf("org %s: mark %d, want %d", org, marks[org], m)
		}
	}
	if _, ok := marks[empty.ID]; ok {
		t.Errorf("an organization without usage got a mark")
	}
	problems, err := db.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("Check after the migration: %s", p)
	}
	for _, c := range []struct {
		q    string
		want int
	}{
		{`SELECT count(*) FROM pragma_table_info('api_keys') WHERE name IN ('budget_spent', 'budget_period_start')`, 0},
		{`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN ('usage_daily_key', 'agents_org_created')`, 2},
	} {
		if n := count(t, db, c.q); n != c.want {
			t.Errorf("%s = %d, want %d", c.q, n, c.want)
		}
	}
	if b, err := db.KeyBudget(ctx, budgeted.ID); err != nil || b != budgeted.Budget {
		t.Errorf("budget after the migration %+v, %v; want %+v", b, err, budgeted.Budget)
	}
}

// TestLockThroughSymlink: a second path to the same database (a symlink to the
// file, or to its directory) meets the same lock; a second server that reached the
// file another way would otherwise hold the same balance in memory twice.
func TestLockThroughSymlink(t *testing.T) {
	ctx := context.Background()
	file := tempFile(t)
	db := openFile(t, file, Options{})
	defer db.Close()
	other := t.TempDir()
	viaFile := filepath.Join(other, "link.db")
	viaDir := filepath.Join(other, "dir")
	if err := os.Symlink(file, viaFile); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	if err := os.Symlink(filepath.Dir(file), viaDir); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{viaFile, filepath.Join(viaDir, filepath.Base(file))} {
		second, err := Open(ctx, "sqlite:"+path, Options{})
		if err == nil {
			second.Close()
			t.Fatalf("a second Open through %s succeeded", path)
		}
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) {
			t.Errorf("Open through %s: %v, want ErrLocked naming this process", path, err)
		}
	}
}

// TestOpenPathWithURICharacters: a database path with characters a file: URI
// gives meaning to (?, #, %) opens exactly that file, beside its own lock, and two
// such paths are two databases.
func TestOpenPathWithURICharacters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var dbs []*DB
	for _, name := range []string{"a?1.db", "a?2.db", "b#c.db", "d%41.db"} {
		file := filepath.Join(dir, name)
		db := openFile(t, file, Options{})
		dbs = append(dbs, db)
		newOrg(t, db, "acme", 1) // each is its own database: the name is free in each
		if _, err := os.Stat(file); err != nil {
			t.Errorf("%s: the database is not at its path: %v", name, err)
		}
		if _, err := os.Stat(file + ".lock"); err != nil {
			t.Errorf("%s: no lock beside it: %v", name, err)
		}
		ro, err := Open(ctx, "sqlite:"+file, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("%s read-only: %v", name, err)
		}
		if n := count(t, ro, `SELECT count(*) FROM orgs`); n != 1 {
			t.Errorf("%s read-only sees %d orgs, want 1", name, n)
		}
		ro.Close()
	}
	for _, stray := range []string{"a", "b", "d"} {
		if _, err := os.Stat(filepath.Join(dir, stray)); err == nil {
			t.Errorf("a database was created at %q, a prefix of a path", stray)
		}
	}
	for _, db := range dbs {
		db.Close()
	}
}
