package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store/storetest"
)

// openDB opens a fresh database in t's temporary directory and closes it when the
// test ends.
func openDB(t testing.TB, opts Options) *DB {
	t.Helper()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "agentd.db")
	if onPostgres(t) {
		dsn = storetest.Postgres(t)
	}
	db, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	testDSNs.Store(db, dsn)
	t.Cleanup(func() { db.Close() })
	return db
}

// testDSNs remembers the DSN each openDB database was opened with, for tests
// that open it a second time (as another replica).
var testDSNs sync.Map

func dsnOf(db *DB) string { v, _ := testDSNs.Load(db); return v.(string) }

func mustTx(t testing.TB, db *DB, fn func(tx *Tx) error) {
	t.Helper()
	if err := db.Tx(context.Background(), fn); err != nil {
		t.Fatalf("Tx: %v", err)
	}
}

// count runs a count query on the read pool.
func count(t testing.TB, db *DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.queryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// now is the current time as the store keeps it: UTC, in whole microseconds.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// grant records a credit grant of amount to orgID inside tx, setting the balance
// to the one this transaction reads plus amount, as billing does.
func grant(ctx context.Context, tx *Tx, id, orgID string, amount agentd.Micros) error {
	b, err := tx.Balance(ctx, orgID)
	if err != nil {
		return err
	}
	return tx.GrantCredits(ctx, &Grant{ID: id, OrgID: orgID, Amount: amount, KeyID: "key-test", Created: 1}, b+amount)
}

// newOrg creates an organization with the given balance (granted once when > 0).
func newOrg(t testing.TB, db *DB, name string, balance agentd.Micros) *agentd.Org {
	t.Helper()
	ctx := context.Background()
	o := &agentd.Org{ID: agentd.NewID("org"), Name: name, CreatedAt: now()}
	mustTx(t, db, func(tx *Tx) error {
		if err := tx.CreateOrg(ctx, o); err != nil {
			return err
		}
		if balance > 0 {
			return grant(ctx, tx, agentd.NewID("grant"), o.ID, balance)
		}
		return nil
	})
	o.Balance = balance
	return o
}

func newAgent(t testing.TB, db *DB, orgID, name string) *agentd.Agent {
	t.Helper()
	now := now()
	a := &agentd.Agent{
		ID: agentd.NewID("agent"), OrgID: orgID, Name: name, Description: "desc of " + name, Active: true,
		Creator: "tester", CreatedAt: now, UpdatedAt: now, ConversationSaving: true,
		Version: agentd.Version{
			Model: "offline", Instructions: "Be brief.", Temperature: 0.7, MaxTokens: 100, CreatedAt: now,
			Demonstrations: []agentd.Demonstration{{Input: "hi", Output: "hello"}},
		},
	}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateAgent(context.Background(), a) })
	return a
}

// okRun is a successful run of agent a in session sid that costs cost; it carries
// a turn when sid is not "".
func okRun(a *agentd.Agent, owner, sid string, cost agentd.Micros) *Run {
	r := &Run{LedgerRow: agentd.LedgerRow{
		RunID: agentd.NewID("run"), CreatedAt: now(), OrgID: a.OrgID, KeyID: "key-test", Owner: owner,
		AgentID: a.ID, AgentName: a.Name, AgentVersion: a.Version.Number, SessionID: sid,
		ModelRequested: "offline", Model: "offline", InputTokens: 10, OutputTokens: 5,
		UsageSource: agentd.UsageProvider, Cost: cost, LatencyMS: 7, Outcome: agentd.OutcomeOK,
	}}
	if sid != "" {
		r.Turn = &agentd.Turn{User: "question " + sid, Assistant: "answer " + sid, UserTokens: 2, AssistantTokens: 3}
	}
	return r
}

// recordRun records r in a transaction of its own.
func recordRun(t testing.TB, db *DB, r *Run) (turnStored bool) {
	t.Helper()
	mustTx(t, db, func(tx *Tx) (err error) {
		turnStored, err = tx.RecordRun(context.Background(), r)
		return err
	})
	return turnStored
}

func balance(t testing.TB, db *DB, orgID string) agentd.Micros {
	t.Helper()
	b, err := db.Balance(context.Background(), orgID)
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	return b
}

func wantCode(t testing.TB, err error, code agentd.Code) {
	t.Helper()
	if got := agentd.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func TestOpenRejectsOtherDatabases(t *testing.T) {
	for _, dsn := range []string{"", "sqlite:", "postgres://u@h/db", "agentd.db", "file:agentd.db"} {
		t.Run(dsn, func(t *testing.T) {
			db, err := Open(context.Background(), dsn, Options{})
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded", dsn)
			}
		})
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "agentd.db")
	files, err := fs.ReadDir(migrations, path.Join("migrations", "sqlite"))
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded migrations: %v (%d files)", err, len(files))
	}
	var orgID string
	for i := range 3 {
		db, err := Open(ctx, dsn, Options{})
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		if i == 0 {
			orgID = newOrg(t, db, "kept", 42).ID
		}
		if n := count(t, db, `SELECT count(*) FROM schema_migrations`); n != len(files) {
			t.Errorf("open #%d: %d rows in schema_migrations, want one per file (%d)", i+1, n, len(files))
		}
		for _, f := range files {
			if n := count(t, db, `SELECT count(*) FROM schema_migrations WHERE name = ?`, f.Name()); n != 1 {
				t.Errorf("open #%d: migration %s recorded %d times", i+1, f.Name(), n)
			}
		}
		if v, err := db.schemaVersion(ctx); err != nil || v != latestMigration(db.d) || v != len(files) {
			t.Errorf("open #%d: schema version %d, %v; want the latest migration %d", i+1, v, err, len(files))
		}
		// Data survives reopening: migrations were not re-run over it.
		if b := balance(t, db, orgID); b != 42 {
			t.Errorf("open #%d: balance %d, want 42", i+1, b)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("close #%d: %v", i+1, err)
		}
	}
}

func TestOrgs(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)

	t.Run("duplicate name", func(t *testing.T) {
		err := db.Tx(ctx, func(tx *Tx) error {
			return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: "acme", CreatedAt: now()})
		})
		wantCode(t, err, agentd.EAlreadyExists)
		if n := count(t, db, `SELECT count(*) FROM orgs`); n != 1 {
			t.Errorf("%d orgs after the duplicate, want 1", n)
		}
	})

	tests := []struct {
		name     string
		idOrName string
		wantID   string
		wantCode agentd.Code
	}{
		{"by id", acme.ID, acme.ID, ""},
		{"by name", "acme", acme.ID, ""},
		{"unknown name", "nope", "", agentd.ENotFound},
		{"unknown id", "org-doesnotexist", "", agentd.ENotFound},
		{"name is case sensitive", "ACME", "", agentd.ENotFound},
		{"empty", "", "", agentd.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := db.Org(ctx, tt.idOrName)
			if tt.wantCode != "" {
				wantCode(t, err, tt.wantCode)
				return
			}
			if err != nil {
				t.Fatalf("Org(%q): %v", tt.idOrName, err)
			}
			if o.ID != tt.wantID || o.Name != "acme" || o.Balance != 0 || !o.CreatedAt.Equal(acme.CreatedAt) {
				t.Errorf("Org(%q) = %+v, want %+v", tt.idOrName, o, acme)
			}
		})
	}

	t.Run("balance of unknown org", func(t *testing.T) {
		_, err := db.Balance(ctx, "org-nope")
		wantCode(t, err, agentd.ENotFound)
		err = db.Tx(ctx, func(tx *Tx) error {
			_, err := tx.Balance(ctx, "org-nope")
			return err
		})
		wantCode(t, err, agentd.ENotFound)
	})

	t.Run("list", func(t *testing.T) {
		globex := newOrg(t, db, "globex", 77)
		orgs, err := db.Orgs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []*agentd.Org{acme, globex}
		slices.SortFunc(want, func(a, b *agentd.Org) int { return strings.Compare(a.ID, b.ID) })
		if len(orgs) != len(want) {
			t.Fatalf("Orgs = %d organizations, want %d", len(orgs), len(want))
		}
		for i, o := range orgs {
			if *o != *want[i] {
				t.Errorf("Orgs[%d] = %+v, want %+v (by id)", i, *o, *want[i])
			}
		}
	})
}

func TestGrantCredits(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	tests := []struct {
		name        string
		amount      agentd.Micros
		wantErr     bool
		wantBalance agentd.Micros // after the grant, whether or not it failed
	}{
		{"positive", 5_000_000, false, 5_000_000},
		{"negative", -1_500_000, false, 3_500_000},
		{"to exactly zero", -3_500_000, false, 0},
		{"below zero", -1, true, 0},
		{"positive again", 10, false, 10},
		{"far below zero", -11, true, 10},
	}
	grants := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen agentd.Micros // the balance the transaction reads after the grant
			err := db.Tx(ctx, func(tx *Tx) (err error) {
				if err := grant(ctx, tx, agentd.NewID("grant"), o.ID, tt.amount); err != nil {
					return err
				}
				seen, err = tx.Balance(ctx, o.ID)
				return err
			})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("grant of %d succeeded with balance %d", tt.amount, seen)
				}
				if !strings.Contains(strings.ToUpper(err.Error()), "CHECK") {
					t.Errorf("error %q does not name the CHECK constraint", err)
				}
			} else {
				if err != nil {
					t.Fatalf("grant of %d: %v", tt.amount, err)
				}
				grants++
				if seen != tt.wantBalance {
					t.Errorf("balance read in the transaction %d, want %d", seen, tt.wantBalance)
				}
			}
			if b := balance(t, db, o.ID); b != tt.wantBalance {
				t.Errorf("stored balance %d, want %d", b, tt.wantBalance)
			}
			if n := count(t, db, `SELECT count(*) FROM credit_grants WHERE org_id = ?`, o.ID); n != grants {
				t.Errorf("%d credit_grants rows, want %d", n, grants)
			}
		})
	}
	t.Run("writes the absolute balance it is given", func(t *testing.T) {
		// Billing computes the new balance; the store writes it as is, whatever the
		// stored balance was.
		before := balance(t, db, o.ID)
		mustTx(t, db, func(tx *Tx) error {
			return tx.GrantCredits(ctx, &Grant{ID: "grant-absolute", OrgID: o.ID, Amount: 5, KeyID: "key-x", Created: 2}, 1234)
		})
		if b := balance(t, db, o.ID); b != 1234 || before == 1234-5 {
			t.Errorf("balance %d (was %d), want exactly 1234", b, before)
		}
		var amount agentd.Micros
		var keyID string
		var created int64
		if err := db.queryRow(ctx, `SELECT amount, key_id, created_at FROM credit_grants WHERE id = 'grant-absolute'`).Scan(&amount, &keyID, &created); err != nil {
			t.Fatal(err)
		}
		if amount != 5 || keyID != "key-x" || created != 2 {
			t.Errorf("grant stored as amount %d, key %q, created %d", amount, keyID, created)
		}
		grants++
	})
	t.Run("unknown org", func(t *testing.T) {
		err := db.Tx(ctx, func(tx *Tx) error {
			return tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: "org-nope", Amount: 1, KeyID: "k", Created: 1}, 1)
		})
		wantCode(t, err, agentd.ENotFound)
		if n := count(t, db, `SELECT count(*) FROM credit_grants WHERE org_id = 'org-nope'`); n != 0 {
			t.Errorf("%d grants recorded for an unknown org", n)
		}
	})
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 0)
	k := &agentd.Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "ci", Owner: "alice", Prefix: "agd_abcdefgh", Hash: strings.Repeat("ab", 32),
		Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsRead}, CreatedAt: fromMicros(100)}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, k) })

	t.Run("by hash", func(t *testing.T) {
		got, err := db.KeyByHash(ctx, k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != k.ID || got.OrgID != acme.ID || got.OrgName != "acme" || got.Owner != "alice" || got.Name != "ci" ||
			got.Prefix != k.Prefix || !slices.Equal(got.Scopes, k.Scopes) || !got.CreatedAt.Equal(fromMicros(100)) || got.Revoked() ||
			got.Budget != (agentd.Budget{Period: agentd.PeriodNone}) {
			t.Errorf("KeyByHash = %+v, want %+v", got, k)
		}
	})
	t.Run("unknown hash", func(t *testing.T) {
		_, err := db.KeyByHash(ctx, strings.Repeat("cd", 32))
		wantCode(t, err, agentd.ENotFound)
	})
	t.Run("unknown id", func(t *testing.T) {
		_, err := db.KeyByID(ctx, "key-nope")
		wantCode(t, err, agentd.ENotFound)
	})
	t.Run("duplicate hash", func(t *testing.T) {
		dup := *k
		dup.ID = agentd.NewID("key")
		wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.CreateKey(ctx, &dup) }), agentd.EAlreadyExists)
	})

	// Who may revoke which key is package auth's to decide; the store revokes by id.
	revokes := []struct {
		name     string
		id       string
		at       int64
		wantCode agentd.Code
		wantAt   int64 // revoked_at afterwards; 0 = not revoked
	}{
		{"unknown key", "key-nope", 200, agentd.ENotFound, 0},
		{"live key", k.ID, 300, "", 300},
		{"twice keeps the first time", k.ID, 400, "", 300},
	}
	for _, tt := range revokes {
		t.Run("revoke "+tt.name, func(t *testing.T) {
			err := db.Tx(ctx, func(tx *Tx) error { return tx.RevokeKey(ctx, tt.id, tt.at) })
			if tt.wantCode != "" {
				wantCode(t, err, tt.wantCode)
			} else if err != nil {
				t.Fatal(err)
			}
			got, err := db.KeyByHash(ctx, k.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if got.Revoked() != (tt.wantAt != 0) || (tt.wantAt != 0 && !got.RevokedAt.Equal(fromMicros(tt.wantAt))) {
				t.Errorf("RevokedAt = %v, want at %d", got.RevokedAt, tt.wantAt)
			}
		})
	}

	k2 := &agentd.Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "new", Owner: "bob", Prefix: "agd_x", Hash: strings.Repeat("ef", 32),
		Scopes: []agentd.Scope{agentd.ScopeAdmin}, CreatedAt: fromMicros(900)}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, k2) })

	t.Run("list and count", func(t *testing.T) {
		keys, err := db.Keys(ctx, acme.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 || keys[0].ID != k2.ID || keys[1].ID != k.ID {
			t.Errorf("Keys = %v, want newest first [%s %s]", keys, k2.ID, k.ID)
		}
		if keys, _ := db.Keys(ctx, other.ID); len(keys) != 0 {
			t.Errorf("other org lists %d keys", len(keys))
		}
		if n, err := db.CountKeys(ctx); err != nil || n != 2 {
			t.Errorf("CountKeys = %d, %v; want 2", n, err)
		}
		if got, err := db.KeyByID(ctx, k2.ID); err != nil || got.Hash != k2.Hash {
			t.Errorf("KeyByID = %+v, %v", got, err)
		}
	})

	// More keys: bob's second key, a live run key and a key of another org's bob.
	k3 := &agentd.Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "bob2", Owner: "bob", Prefix: "agd_y", Hash: strings.Repeat("12", 32),
		Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeUsage}, CreatedAt: fromMicros(950)}
	k4 := &agentd.Key{ID: agentd.NewID("key"), OrgID: other.ID, Name: "bob", Owner: "bob", Prefix: "agd_z", Hash: strings.Repeat("34", 32),
		Scopes: []agentd.Scope{agentd.ScopeRun}, CreatedAt: fromMicros(960)}
	mustTx(t, db, func(tx *Tx) error {
		return errors.Join(tx.CreateKey(ctx, k3), tx.CreateKey(ctx, k4))
	})
	ids := func(keys []*agentd.Key) []string {
		out := []string{}
		for _, k := range keys {
			out = append(out, k.ID)
		}
		return out
	}

	t.Run("keys of an owner", func(t *testing.T) {
		tests := []struct {
			org, owner string
			want       []string
		}{
			{acme.ID, "bob", []string{k2.ID, k3.ID}},
			{acme.ID, "alice", []string{k.ID}}, // revoked keys are listed too
			{other.ID, "bob", []string{k4.ID}},
			{other.ID, "alice", []string{}},
			{acme.ID, "carol", []string{}},
		}
		for _, tt := range tests {
			want := slices.Clone(tt.want)
			slices.Sort(want)
			var got []*agentd.Key
			mustTx(t, db, func(tx *Tx) (err error) {
				got, err = tx.KeysOfOwner(ctx, tt.org, tt.owner)
				return err
			})
			if !slices.Equal(ids(got), want) {
				t.Errorf("KeysOfOwner(%s, %s) = %v, want %v (by id)", tt.org, tt.owner, ids(got), want)
			}
			for _, k := range got {
				if k.Owner != tt.owner || k.OrgID != tt.org {
					t.Errorf("KeysOfOwner(%s, %s) lists %+v", tt.org, tt.owner, k)
				}
			}
		}
	})

	t.Run("budgets", func(t *testing.T) {
		withBudget := &agentd.Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "budgeted", Owner: "dan", Prefix: "agd_b", Hash: strings.Repeat("56", 32),
			Scopes: []agentd.Scope{agentd.ScopeRun}, CreatedAt: now(), Budget: agentd.Budget{Set: true, Limit: 5_000, Period: agentd.PeriodDaily}}
		mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, withBudget) })
		steps := []struct {
			name   string
			keyID  string
			set    *agentd.Budget // nil: only read
			want   agentd.Budget
			wantCd agentd.Code
		}{
			{"created without a budget", k3.ID, nil, agentd.Budget{Period: agentd.PeriodNone}, ""},
			{"created with a budget", withBudget.ID, nil, withBudget.Budget, ""},
			{"set a monthly budget", k3.ID, &agentd.Budget{Set: true, Limit: 7, Period: agentd.PeriodMonthly}, agentd.Budget{Set: true, Limit: 7, Period: agentd.PeriodMonthly}, ""},
			{"a zero limit is a budget", k3.ID, &agentd.Budget{Set: true, Limit: 0, Period: agentd.PeriodNone}, agentd.Budget{Set: true, Limit: 0, Period: agentd.PeriodNone}, ""},
			{"remove it", k3.ID, &agentd.Budget{Period: agentd.PeriodNone}, agentd.Budget{Period: agentd.PeriodNone}, ""},
			{"unknown key", "key-nope", &agentd.Budget{Set: true, Limit: 1, Period: agentd.PeriodDaily}, agentd.Budget{}, agentd.ENotFound},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				if st.set != nil {
					err := db.Tx(ctx, func(tx *Tx) error { return tx.SetKeyBudget(ctx, st.keyID, *st.set) })
					if st.wantCd != "" {
						wantCode(t, err, st.wantCd)
						_, err := db.KeyBudget(ctx, st.keyID)
						wantCode(t, err, st.wantCd)
						return
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				got, err := db.KeyBudget(ctx, st.keyID)
				if err != nil || got != st.want {
					t.Errorf("KeyBudget = %+v, %v; want %+v", got, err, st.want)
				}
				if k, err := db.KeyByID(ctx, st.keyID); err != nil || k.Budget != st.want {
					t.Errorf("KeyByID budget = %+v, %v; want %+v", k.Budget, err, st.want)
				}
			})
		}
		if n := count(t, db, `SELECT count(*) FROM api_keys WHERE budget IS NULL`); n != 4 {
			t.Errorf("%d keys without a budget, want 4: setting one key's budget changed another's", n)
		}
	})
}

func TestAgents(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 1_000_000)
	other := newOrg(t, db, "other", 0)
	bot := newAgent(t, db, acme.ID, "support_bot")
	helper := newAgent(t, db, acme.ID, "sales_bot")

	t.Run("lookups", func(t *testing.T) {
		tests := []struct {
			name     string
			get      func() (*agentd.Agent, error)
			wantID   string
			wantCode agentd.Code
		}{
			{"by id", func() (*agentd.Agent, error) { return db.Agent(ctx, acme.ID, bot.ID) }, bot.ID, ""},
			{"by name", func() (*agentd.Agent, error) { return db.AgentByName(ctx, acme.ID, "support_bot") }, bot.ID, ""},
			{"by id in another org", func() (*agentd.Agent, error) { return db.Agent(ctx, other.ID, bot.ID) }, "", agentd.ENotFound},
			{"by name in another org", func() (*agentd.Agent, error) { return db.AgentByName(ctx, other.ID, "support_bot") }, "", agentd.ENotFound},
			{"unknown name", func() (*agentd.Agent, error) { return db.AgentByName(ctx, acme.ID, "support") }, "", agentd.ENotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a, err := tt.get()
				if tt.wantCode != "" {
					wantCode(t, err, tt.wantCode)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if a.ID != tt.wantID || a.Name != "support_bot" || a.Version.Number != 1 || a.Version.Model != "offline" ||
					a.Version.Instructions != "Be brief." || !slices.Equal(a.Version.Demonstrations, bot.Version.Demonstrations) ||
					!a.CreatedAt.Equal(bot.CreatedAt) || a.LastUsed != nil || a.UsageCount != 0 || !a.Active || !a.ConversationSaving {
					t.Errorf("got %+v, want %+v", a, bot)
				}
			})
		}
	})

	t.Run("duplicate name", func(t *testing.T) {
		dup := *bot
		dup.ID = agentd.NewID("agent")
		wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.CreateAgent(ctx, &dup) }), agentd.EAlreadyExists)
		// The same name in another organization is fine.
		newAgent(t, db, other.ID, "support_bot")
	})

	t.Run("count", func(t *testing.T) {
		for _, c := range []struct {
			org  string
			want int
		}{{acme.ID, 2}, {other.ID, 1}, {"org-nope", 0}} {
			var n int
			mustTx(t, db, func(tx *Tx) (err error) {
				n, err = tx.CountAgents(ctx, c.org)
				return err
			})
			if n != c.want {
				t.Errorf("CountAgents(%s) = %d, want %d", c.org, n, c.want)
			}
		}
	})

	t.Run("update makes a new version", func(t *testing.T) {
		a, _ := db.Agent(ctx, acme.ID, bot.ID)
		for want := 2; want <= 3; want++ {
			a.Version.Instructions = fmt.Sprintf("v%d", want)
			a.Version.Demonstrations = nil
			mustTx(t, db, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, true) })
			if a.Version.Number != want {
				t.Fatalf("UpdateAgent set version %d, want %d", a.Version.Number, want)
			}
			got, err := db.Agent(ctx, acme.ID, bot.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version.Number != want || got.Version.Instructions != fmt.Sprintf("v%d", want) || got.Version.Demonstrations == nil || len(got.Version.Demonstrations) != 0 {
				t.Errorf("stored version %+v", got.Version)
			}
		}
		if n := count(t, db, `SELECT count(*) FROM agent_versions WHERE agent_id = ?`, bot.ID); n != 3 {
			t.Errorf("%d versions, want 3 (old versions are kept)", n)
		}
	})

	t.Run("update without new version keeps it", func(t *testing.T) {
		a, _ := db.Agent(ctx, acme.ID, bot.ID)
		a.Description = "changed"
		a.Active = false
		mustTx(t, db, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, false) })
		got, _ := db.Agent(ctx, acme.ID, bot.ID)
		if got.Version.Number != 3 || got.Description != "changed" || got.Active {
			t.Errorf("got %+v", got)
		}
	})

	t.Run("list active and inactive", func(t *testing.T) {
		tests := []struct {
			name            string
			includeInactive bool
			want            []string
		}{
			{"active only", false, []string{helper.ID}},
			{"all, oldest first", true, []string{bot.ID, helper.ID}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				as, next, err := db.AgentsPage(ctx, acme.ID, tt.includeInactive, "", 100)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, a := range as {
					ids = append(ids, a.ID)
				}
				if !slices.Equal(ids, tt.want) || next != "" {
					t.Errorf("AgentsPage = %v (next %q), want %v", ids, next, tt.want)
				}
				refs, next, err := db.AgentRefs(ctx, acme.ID, tt.includeInactive, "", 100)
				if err != nil {
					t.Fatal(err)
				}
				ids = nil
				for _, r := range refs {
					ids = append(ids, r.ID)
				}
				if !slices.Equal(ids, tt.want) || next != "" {
					t.Errorf("AgentRefs = %v (next %q), want %v", ids, next, tt.want)
				}
			})
		}
		as, next, err := db.AgentsPage(ctx, newOrg(t, db, "empty", 0).ID, true, "", 10)
		if err != nil || as == nil || len(as) != 0 || next != "" {
			t.Errorf("AgentsPage of an empty org = %v, %q, %v; want empty non-nil", as, next, err)
		}
	})

	t.Run("rename clash rolls the new version back", func(t *testing.T) {
		a, _ := db.Agent(ctx, acme.ID, helper.ID)
		a.Name = "support_bot"
		a.Version.Instructions = "never stored"
		err := db.Tx(ctx, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, true) })
		wantCode(t, err, agentd.EAlreadyExists)
		got, _ := db.Agent(ctx, acme.ID, helper.ID)
		if got.Name != "sales_bot" || got.Version.Number != 1 {
			t.Errorf("after a failed rename: %+v", got)
		}
		if n := count(t, db, `SELECT count(*) FROM agent_versions WHERE agent_id = ?`, helper.ID); n != 1 {
			t.Errorf("%d versions after the failed update, want 1", n)
		}
	})

	t.Run("update of another org's agent", func(t *testing.T) {
		a, _ := db.Agent(ctx, acme.ID, helper.ID)
		a.OrgID = other.ID
		a.Description = "hijacked"
		wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.UpdateAgent(ctx, a, false) }), agentd.ENotFound)
		got, _ := db.Agent(ctx, acme.ID, helper.ID)
		if got.Description == "hijacked" {
			t.Error("another org updated the agent")
		}
	})

	t.Run("delete removes turns and keeps ledger", func(t *testing.T) {
		victim := newAgent(t, db, acme.ID, "victim")
		survivor := newAgent(t, db, acme.ID, "survivor")
		for _, a := range []*agentd.Agent{victim, victim, survivor} {
			if !recordRun(t, db, okRun(a, "alice", "s1", 10)) {
				t.Fatal("a run of a live agent stored no turn")
			}
		}
		wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.DeleteAgent(ctx, other.ID, victim.ID) }), agentd.ENotFound)
		if n := count(t, db, `SELECT count(*) FROM session_turns WHERE agent_id = ?`, victim.ID); n != 2 {
			t.Fatalf("another org's delete removed turns: %d left, want 2", n)
		}
		mustTx(t, db, func(tx *Tx) error { return tx.DeleteAgent(ctx, acme.ID, victim.ID) })
		_, err := db.Agent(ctx, acme.ID, victim.ID)
		wantCode(t, err, agentd.ENotFound)
		for _, c := range []struct {
			q    string
			id   string
			want int
		}{
			{`SELECT count(*) FROM session_turns WHERE agent_id = ?`, victim.ID, 0},
			{`SELECT count(*) FROM agent_versions WHERE agent_id = ?`, victim.ID, 0},
			{`SELECT count(*) FROM ledger WHERE agent_id = ?`, victim.ID, 2},
			{`SELECT count(*) FROM session_turns WHERE agent_id = ?`, survivor.ID, 1},
		} {
			if n := count(t, db, c.q, c.id); n != c.want {
				t.Errorf("%s [%s] = %d, want %d", c.q, c.id, n, c.want)
			}
		}
		wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.DeleteAgent(ctx, acme.ID, victim.ID) }), agentd.ENotFound)
	})
}

// TestAgentsPage: every page size visits every agent of the organization exactly
// once, in (created_at, id) order, ties in created_at included; AgentRefs pages the
// same way.
func TestAgentsPage(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 0)
	base := now()
	type want struct {
		id     string
		active bool
	}
	var all []want
	const n = 13
	for i := range n {
		// Groups of three share a creation time, in an order other than their ids'.
		at := base.Add(time.Duration(i/3) * time.Second)
		a := &agentd.Agent{
			ID: agentd.NewID("agent"), OrgID: o.ID, Name: fmt.Sprintf("bot%02d", i), Active: i%4 != 1, Creator: "tester",
			CreatedAt: at, UpdatedAt: at, Version: agentd.Version{Model: fmt.Sprintf("model-%d", i), CreatedAt: at},
		}
		mustTx(t, db, func(tx *Tx) error { return tx.CreateAgent(ctx, a) })
		all = append(all, want{a.ID, a.Active})
	}
	newAgent(t, db, other.ID, "bot00") // another org's: never listed
	// The expected order: created_at, then id.
	order := func(includeInactive bool) []string {
		var ids []string
		type ca struct {
			at time.Time
			id string
		}
		var byTime []ca
		for i, w := range all {
			if includeInactive || w.active {
				byTime = append(byTime, ca{base.Add(time.Duration(i/3) * time.Second), w.id})
			}
		}
		slices.SortFunc(byTime, func(a, b ca) int {
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return strings.Compare(a.id, b.id)
		})
		for _, x := range byTime {
			ids = append(ids, x.id)
		}
		return ids
	}
	for _, includeInactive := range []bool{false, true} {
		wantIDs := order(includeInactive)
		for _, size := range []int{1, 2, 3, 4, 7, len(wantIDs) - 1, len(wantIDs), len(wantIDs) + 1} {
			t.Run(fmt.Sprintf("inactive %v, limit %d", includeInactive, size), func(t *testing.T) {
				var got, gotRefs []string
				cursor, refCursor := "", ""
				for pages := 0; ; pages++ {
					if pages > n+1 {
						t.Fatal("paging does not end")
					}
					page, next, err := db.AgentsPage(ctx, o.ID, includeInactive, cursor, size)
					if err != nil {
						t.Fatal(err)
					}
					refs, refNext, err := db.AgentRefs(ctx, o.ID, includeInactive, refCursor, size)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) > size || len(refs) > size {
						t.Fatalf("pages of %d agents and %d refs, limit %d", len(page), len(refs), size)
					}
					if next != "" && len(page) != size {
						t.Fatalf("a short page (%d agents) has a next cursor", len(page))
					}
					for _, a := range page {
						if a.OrgID != o.ID || (!includeInactive && !a.Active) {
							t.Fatalf("listed %+v", a)
						}
						got = append(got, a.ID)
					}
					for _, r := range refs {
						a, err := db.Agent(ctx, o.ID, r.ID)
						if err != nil {
							t.Fatal(err)
						}
						if r.Name != a.Name || r.Model != a.Version.Model || r.Active != a.Active || !r.CreatedAt.Equal(a.CreatedAt) {
							t.Errorf("ref %+v of agent %+v", r, a)
						}
						gotRefs = append(gotRefs, r.ID)
					}
					if next != refNext {
						t.Errorf("AgentsPage next %q, AgentRefs next %q", next, refNext)
					}
					if next == "" {
						break
					}
					cursor, refCursor = next, refNext
				}
				if !slices.Equal(got, wantIDs) || !slices.Equal(gotRefs, wantIDs) {
					t.Errorf("pages visit %v\nrefs visit %v\nwant %v", got, gotRefs, wantIDs)
				}
			})
		}
	}
	t.Run("bad cursors", func(t *testing.T) {
		enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
		for _, c := range []string{"!!", enc("123"), enc("x|agent-a"), enc("123|"), enc("123|run-a"), enc("|agent-a")} {
			_, _, err := db.AgentsPage(ctx, o.ID, true, c, 10)
			wantCode(t, err, agentd.EInvalid)
			_, _, err = db.AgentRefs(ctx, o.ID, true, c, 10)
			wantCode(t, err, agentd.EInvalid)
		}
	})
	t.Run("a cursor of another org lists nothing of it", func(t *testing.T) {
		page, _, err := db.AgentsPage(ctx, other.ID, true, agentCursor(0, "agent-"), 100)
		if err != nil || len(page) != 1 || page[0].OrgID != other.ID {
			t.Errorf("AgentsPage(other) = %v, %v", page, err)
		}
	})
}

// stats is what RecordRun may change, read back in one go.
type stats struct {
	balance                agentd.Micros
	ledger, turns, idem    int
	usage, failed, latency int64
	lastUsed               *time.Time
}

func readStats(t testing.TB, db *DB, orgID, agentID string) stats {
	t.Helper()
	a, err := db.Agent(context.Background(), orgID, agentID)
	if err != nil {
		t.Fatal(err)
	}
	return stats{
		balance: balance(t, db, orgID),
		ledger:  count(t, db, `SELECT count(*) FROM ledger WHERE org_id = ?`, orgID),
		turns:   count(t, db, `SELECT count(*) FROM session_turns WHERE org_id = ?`, orgID),
		idem:    count(t, db, `SELECT count(*) FROM idempotency WHERE org_id = ?`, orgID),
		usage:   a.UsageCount, failed: a.FailedCount, latency: a.TotalLatencyMS, lastUsed: a.LastUsed,
	}
}

// withIdem gives r an idempotency record.
func withIdem(r *Run) *Run {
	r.Idem = &Idem{OrgID: r.OrgID, KeyID: r.KeyID, Key: "idem-" + r.RunID, RequestHash: "h", RunID: r.RunID, Result: []byte(`{}`),
		Created: micros(r.CreatedAt), Expires: micros(r.CreatedAt) + 1_000_000}
	return r
}

func TestRecordRun(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 1000)
	a := newAgent(t, db, o.ID, "bot")

	failed := withIdem(okRun(a, "alice", "s1", 0))
	failed.Outcome, failed.ErrorCode = agentd.OutcomeFailed, string(agentd.EInferenceFailed) // a turn it must not store
	cancelled := withIdem(okRun(a, "alice", "s1", 4))
	cancelled.Outcome = agentd.OutcomeCancelled // pays for what it generated; no turn, no replay
	noTurn := okRun(a, "alice", "s1", 5)
	noTurn.Turn = nil

	tests := []struct {
		name      string
		run       *Run
		wantErr   bool
		wantTurn  bool // RecordRun reports the turn stored
		wantReply bool // the idempotency record is stored
		// changes expected relative to before
		dBalance                  agentd.Micros
		dLedger, dTurns           int
		dUsage, dFailed, dLatency int64
	}{
		{"ok with turn", okRun(a, "alice", "s1", 300), false, true, false, -300, 1, 1, 1, 0, 7},
		{"ok with turn and idempotency record", withIdem(okRun(a, "alice", "s1", 1)), false, true, true, -1, 1, 1, 1, 0, 7},
		{"ok without session", okRun(a, "alice", "", 100), false, false, false, -100, 1, 0, 1, 0, 7},
		{"ok, agent does not save turns", noTurn, false, false, false, -5, 1, 0, 1, 0, 7},
		{"free run", okRun(a, "alice", "s1", 0), false, true, false, 0, 1, 1, 1, 0, 7},
		{"failed inference", failed, false, false, false, 0, 1, 0, 0, 1, 0},
		{"cancelled", cancelled, false, false, false, -4, 1, 0, 0, 1, 0},
		{"cost exceeds balance", okRun(a, "alice", "s1", 591), true, false, false, 0, 0, 0, 0, 0, 0},
		{"cost exactly the balance", okRun(a, "alice", "s1", 590), false, true, false, -590, 1, 1, 1, 0, 7},
		{"anything over an empty balance", okRun(a, "alice", "s1", 1), true, false, false, 0, 0, 0, 0, 0, 0},
		{"duplicate run id", &Run{LedgerRow: agentd.LedgerRow{RunID: failed.RunID, Outcome: agentd.OutcomeOK, OrgID: o.ID, AgentID: a.ID}}, true, false, false, 0, 0, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readStats(t, db, o.ID, a.ID)
			var stored bool
			err := db.Tx(ctx, func(tx *Tx) (err error) {
				stored, err = tx.RecordRun(ctx, tt.run)
				return err
			})
			if tt.wantErr != (err != nil) {
				t.Fatalf("RecordRun error = %v, want error %v", err, tt.wantErr)
			}
			if stored != tt.wantTurn {
				t.Errorf("RecordRun reports turn stored %v, want %v", stored, tt.wantTurn)
			}
			after := readStats(t, db, o.ID, a.ID)
			got := [7]int64{int64(after.balance - before.balance), int64(after.ledger - before.ledger), int64(after.turns - before.turns),
				after.usage - before.usage, after.failed - before.failed, after.latency - before.latency, int64(after.idem - before.idem)}
			want := [7]int64{int64(tt.dBalance), int64(tt.dLedger), int64(tt.dTurns), tt.dUsage, tt.dFailed, tt.dLatency, 0}
			if tt.wantReply {
				want[6] = 1
			}
			if got != want {
				t.Errorf("changes (balance, ledger, turns, usage, failed, latency, idempotency) = %v, want %v", got, want)
			}
			if tt.dUsage > 0 {
				if after.lastUsed == nil || !after.lastUsed.Equal(tt.run.CreatedAt) {
					t.Errorf("last_used = %v, want %v", after.lastUsed, tt.run.CreatedAt)
				}
			} else if !timeEq(after.lastUsed, before.lastUsed) {
				t.Errorf("last_used changed from %v to %v", before.lastUsed, after.lastUsed)
			}
			if tt.wantErr && tt.run.RunID != failed.RunID {
				if n := count(t, db, `SELECT count(*) FROM ledger WHERE run_id = ?`, tt.run.RunID); n != 0 {
					t.Errorf("failed record left %d ledger rows", n)
				}
			}
			if !tt.wantErr {
				rows, err := db.Ledger(ctx, o.ID)
				if err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(rows, func(r agentd.LedgerRow) bool { return r.RunID == tt.run.RunID })
				if i < 0 || rows[i] != tt.run.LedgerRow {
					t.Errorf("ledger row stored as %+v, want %+v", rows[max(i, 0)], tt.run.LedgerRow)
				}
			}
		})
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check after the runs: %v %q", err, problems)
	}
}

// TestRecordRunAgentDeleted: a run whose agent was deleted while it was in flight
// keeps its ledger row and its charge, and drops its turn (a deleted agent has no
// sessions), saying so.
func TestRecordRunAgentDeleted(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 1000)
	gone := newAgent(t, db, o.ID, "gone")
	kept := newAgent(t, db, o.ID, "kept")
	r := withIdem(okRun(gone, "alice", "s1", 30))
	mustTx(t, db, func(tx *Tx) error { return tx.DeleteAgent(ctx, o.ID, gone.ID) })
	// The same agent id in another organization does not count as the agent.
	other := newOrg(t, db, "other", 1000)
	clash := okRun(kept, "alice", "s1", 1)
	clash.OrgID = other.ID

	tests := []struct {
		name       string
		run        *Run
		wantStored bool
		wantTurns  int
	}{
		{"deleted agent", r, false, 0},
		{"agent of another org", clash, false, 0},
		{"live agent", okRun(kept, "alice", "s1", 1), true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := balance(t, db, tt.run.OrgID)
			if stored := recordRun(t, db, tt.run); stored != tt.wantStored {
				t.Errorf("turn stored %v, want %v", stored, tt.wantStored)
			}
			if n := count(t, db, `SELECT count(*) FROM session_turns WHERE run_id = ?`, tt.run.RunID); n != tt.wantTurns {
				t.Errorf("%d turns stored, want %d", n, tt.wantTurns)
			}
			if n := count(t, db, `SELECT count(*) FROM ledger WHERE run_id = ?`, tt.run.RunID); n != 1 {
				t.Errorf("%d ledger rows, want 1: the money record stays", n)
			}
			if b := balance(t, db, tt.run.OrgID); b != before-tt.run.Cost {
				t.Errorf("balance %d, want %d: the charge stays", b, before-tt.run.Cost)
			}
		})
	}
	if n := count(t, db, `SELECT count(*) FROM idempotency WHERE run_id = ?`, r.RunID); n != 1 {
		t.Errorf("%d idempotency records of the deleted agent's run, want 1: its result replays", n)
	}
	if problems, err := db.Check(ctx); err != nil || len(problems) > 0 {
		t.Errorf("Check: %v %q", err, problems)
	}
}

func timeEq(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// TestRecordRunBatchIsolation puts many writes in one group-committed transaction,
// one of which cannot be paid for: it must fail whole while the others commit.
func TestRecordRunBatchIsolation(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{MaxWait: 2 * time.Second})
	o := newOrg(t, db, "acme", 1000)
	a := newAgent(t, db, o.ID, "bot")
	const n = 40
	runs := make([]*Run, n)
	for i := range runs {
		runs[i] = okRun(a, "alice", fmt.Sprintf("s%d", i), 10)
	}
	const bad = 17
	runs[bad].Cost = 1_000_000 // far more than the balance

	// Announce every write first so that the writer gathers them into one batch.
	exps := make([]*Expectation, n)
	for i := range exps {
		exps[i] = db.Expect()
	}
	var (
		wg   sync.WaitGroup
		errs = make([]error, n)
		txs  = make([]any, n)
	)
	for i := range runs {
		wg.Go(func() {
			errs[i] = exps[i].Tx(ctx, func(tx *Tx) error {
				txs[i] = tx.tx
				_, err := tx.RecordRun(ctx, runs[i])
				return err
			})
		})
	}
	wg.Wait()

	for i := 1; i < n; i++ {
		if txs[i] != txs[0] {
			t.Fatalf("writes were not grouped into one transaction (write %d in another); the test proves nothing", i)
		}
	}
	for i, err := range errs {
		if (err != nil) != (i == bad) {
			t.Errorf("run %d: err = %v", i, err)
		}
	}
	s := readStats(t, db, o.ID, a.ID)
	if want := (stats{balance: 1000 - 10*(n-1), ledger: n - 1, turns: n - 1, usage: n - 1, latency: 7 * (n - 1)}); s.balance != want.balance ||
		s.ledger != want.ledger || s.turns != want.turns || s.usage != want.usage || s.latency != want.latency || s.failed != 0 {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
	for i, r := range runs {
		want := 1
		if i == bad {
			want = 0
		}
		if got := count(t, db, `SELECT count(*) FROM ledger WHERE run_id = ?`, r.RunID); got != want {
			t.Errorf("run %d: %d ledger rows, want %d", i, got, want)
		}
		if got := count(t, db, `SELECT count(*) FROM session_turns WHERE run_id = ?`, r.RunID); got != want {
			t.Errorf("run %d: %d turns, want %d", i, got, want)
		}
	}
	if db.w.expected.Load() != 0 {
		t.Errorf("expected = %d after every announced write was made", db.w.expected.Load())
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 1_000_000)
	other := newOrg(t, db, "other", 1_000_000)
	bot := newAgent(t, db, acme.ID, "bot")
	bot2 := newAgent(t, db, acme.ID, "bot2")
	otherBot := newAgent(t, db, other.ID, "bot")

	record := func(a *agentd.Agent, owner, sid, msg string) {
		r := okRun(a, owner, sid, 1)
		r.Turn.User, r.Turn.Assistant = msg, "re: "+msg
		recordRun(t, db, r)
	}
	for i := range 5 {
		record(bot, "alice", "s1", fmt.Sprintf("m%d", i))
	}
	record(bot, "bob", "s1", "bob's")
	record(bot2, "alice", "s1", "bot2's")
	record(otherBot, "alice", "s1", "other org's")
	record(bot, "alice", "s2", "second session")

	read := func(k agentd.SessionKey, limit int) []string {
		var got []string
		err := db.History(ctx, k, func(tr agentd.Turn) bool {
			if tr.Assistant != "re: "+tr.User || tr.UserTokens != 2 || tr.AssistantTokens != 3 {
				t.Errorf("turn %+v", tr)
			}
			got = append(got, tr.User)
			return len(got) < limit
		})
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		return got
	}
	key := func(org, agent, owner, sid string) agentd.SessionKey {
		return agentd.SessionKey{OrgID: org, AgentID: agent, Owner: owner, SessionID: sid}
	}
	tests := []struct {
		name  string
		key   agentd.SessionKey
		limit int
		want  []string
	}{
		{"newest first", key(acme.ID, bot.ID, "alice", "s1"), 100, []string{"m4", "m3", "m2", "m1", "m0"}},
		{"stops when fn returns false", key(acme.ID, bot.ID, "alice", "s1"), 2, []string{"m4", "m3"}},
		{"stop after one", key(acme.ID, bot.ID, "alice", "s1"), 1, []string{"m4"}},
		{"other owner", key(acme.ID, bot.ID, "bob", "s1"), 100, []string{"bob's"}},
		{"other agent", key(acme.ID, bot2.ID, "alice", "s1"), 100, []string{"bot2's"}},
		{"other org", key(other.ID, otherBot.ID, "alice", "s1"), 100, []string{"other org's"}},
		{"other org, same agent id", key(other.ID, bot.ID, "alice", "s1"), 100, nil},
		{"other session", key(acme.ID, bot.ID, "alice", "s2"), 100, []string{"second session"}},
		{"unknown session", key(acme.ID, bot.ID, "alice", "s3"), 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := read(tt.key, tt.limit); !slices.Equal(got, tt.want) {
				t.Errorf("History = %q, want %q", got, tt.want)
			}
			n, err := db.CountTurns(ctx, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if tt.limit >= 100 && n != len(tt.want) {
				t.Errorf("CountTurns = %d, want %d", n, len(tt.want))
			}
		})
	}
}

// TestGroupCommitConcurrent: many concurrent writes each land exactly once, in far
// fewer transactions than writes.
func TestGroupCommitConcurrent(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	const n = 200
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		txs = map[any]int{}
	)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = db.Tx(ctx, func(tx *Tx) error {
				mu.Lock()
				txs[tx.tx]++
				mu.Unlock()
				return grant(ctx, tx, fmt.Sprintf("grant-%03d", i), o.ID, 1)
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if b := balance(t, db, o.ID); b != n {
		t.Errorf("balance %d, want %d", b, n)
	}
	if got := count(t, db, `SELECT count(DISTINCT id) FROM credit_grants WHERE org_id = ?`, o.ID); got != n {
		t.Errorf("%d distinct grants, want %d", got, n)
	}
	if got := count(t, db, `SELECT count(*) FROM credit_grants WHERE org_id = ?`, o.ID); got != n {
		t.Errorf("%d grants, want %d", got, n)
	}
	t.Logf("%d writes in %d transactions", n, len(txs))
}

func TestExpectation(t *testing.T) {
	ctx := context.Background()
	// A MaxWait far beyond eventGuard makes a leaked announcement visible: every
	// batch would wait it out.
	const maxWait = time.Hour
	insert := func(db *DB, name string) func(tx *Tx) error {
		return func(tx *Tx) error {
			return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: name, CreatedAt: fromMicros(1)})
		}
	}
	tests := []struct {
		name string
		use  func(t *testing.T, db *DB)
	}{
		{"used with Tx", func(t *testing.T, db *DB) {
			e := db.Expect()
			if err := e.Tx(ctx, insert(db, "a")); err != nil {
				t.Fatal(err)
			}
		}},
		{"cancelled", func(t *testing.T, db *DB) {
			db.Expect().Cancel()
		}},
		{"cancel after Tx does nothing", func(t *testing.T, db *DB) {
			e := db.Expect()
			if err := e.Tx(ctx, insert(db, "a")); err != nil {
				t.Fatal(err)
			}
			e.Cancel()
			e.Cancel()
		}},
		{"Tx twice", func(t *testing.T, db *DB) {
			e := db.Expect()
			if err := e.Tx(ctx, insert(db, "a")); err != nil {
				t.Fatal(err)
			}
			if err := e.Tx(ctx, insert(db, "b")); err != nil {
				t.Fatal(err)
			}
		}},
		{"failing Tx", func(t *testing.T, db *DB) {
			e := db.Expect()
			if err := e.Tx(ctx, func(*Tx) error { return errors.New("no") }); err == nil {
				t.Fatal("want error")
			}
			e.Cancel()
		}},
		{"one used, one cancelled", func(t *testing.T, db *DB) {
			e1, e2 := db.Expect(), db.Expect()
			e2.Cancel()
			if err := e1.Tx(ctx, insert(db, "a")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t, Options{MaxWait: maxWait})
			tt.use(t, db)
			if got := db.w.expected.Load(); got != 0 {
				t.Errorf("expected = %d after the announcements ended, want 0", got)
			}
			txWithin(t, db, insert(db, "after"), "a following Tx")
			if _, err := db.Org(ctx, "after"); err != nil {
				t.Errorf("following write: %v", err)
			}
		})
	}
}

func TestTxPanic(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	err := db.Tx(ctx, func(tx *Tx) error {
		if err := tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: "ghost", CreatedAt: fromMicros(1)}); err != nil {
			return err
		}
		panic("boom")
	})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Tx of a panicking fn = %v, want an error naming the panic", err)
	}
	if _, err := db.Org(ctx, "ghost"); agentd.ErrorCode(err) != agentd.ENotFound {
		t.Errorf("the panicking write was kept: %v", err)
	}
	// The writer is still alive and writes.
	for i := range 3 {
		mustTx(t, db, func(tx *Tx) error {
			return tx.CreateOrg(ctx, &agentd.Org{ID: agentd.NewID("org"), Name: fmt.Sprintf("after-%d", i), CreatedAt: fromMicros(1)})
		})
	}
	if n := count(t, db, `SELECT count(*) FROM orgs`); n != 3 {
		t.Errorf("%d orgs, want 3", n)
	}
}

func TestTxAfterClose(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "agentd.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := db.Expect()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	called := false
	tests := []struct {
		name string
		tx   func(fn func(*Tx) error) error
	}{
		{"Tx", func(fn func(*Tx) error) error { return db.Tx(ctx, fn) }},
		{"Expectation.Tx", func(fn func(*Tx) error) error { return e.Tx(ctx, fn) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tx(func(*Tx) error { called = true; return nil })
			wantCode(t, err, agentd.EUnavailable)
		})
	}
	if called {
		t.Error("fn ran after Close")
	}
	if got := db.w.expected.Load(); got != 0 {
		t.Errorf("expected = %d after a refused announced write", got)
	}
}

// TestCloseWhileWriting: writes racing Close either commit (and say so) or are
// refused with EUnavailable (and leave nothing).
func TestCloseWhileWriting(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "agentd.db")
	db, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := newOrg(t, db, "acme", 0)
	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = db.Tx(ctx, func(tx *Tx) error {
				return grant(ctx, tx, fmt.Sprintf("grant-%03d", i), o.ID, 1)
			})
		})
	}
	close(start)
	runtime.Gosched()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	db, err = Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ok := 0
	for i, err := range errs {
		landed := count(t, db, `SELECT count(*) FROM credit_grants WHERE id = ?`, fmt.Sprintf("grant-%03d", i))
		switch {
		case err == nil:
			ok++
			if landed != 1 {
				t.Errorf("write %d reported success but is not stored", i)
			}
		case agentd.ErrorCode(err) == agentd.EUnavailable:
			if landed != 0 {
				t.Errorf("write %d was refused (%v) but is stored", i, err)
			}
		default:
			t.Errorf("write %d: unexpected error %v", i, err)
		}
	}
	if b := balance(t, db, o.ID); b != agentd.Micros(ok) {
		t.Errorf("balance %d, want %d successful grants", b, ok)
	}
	t.Logf("%d of %d writes committed before Close", ok, n)
}

func TestLedgerTotals(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 500)
	a := newAgent(t, db, acme.ID, "bot")
	for _, amt := range []agentd.Micros{1000, 250, -50} {
		mustTx(t, db, func(tx *Tx) error { return grant(ctx, tx, agentd.NewID("grant"), acme.ID, amt) })
	}
	for _, cost := range []agentd.Micros{100, 0, 33} {
		recordRun(t, db, okRun(a, "alice", "", cost))
	}
	f := okRun(a, "alice", "", 0)
	f.Outcome = agentd.OutcomeFailed
	recordRun(t, db, f)
	c := okRun(a, "alice", "", 17)
	c.Outcome = agentd.OutcomeCancelled // charged, but not a successful run
	recordRun(t, db, c)

	tests := []struct {
		name  string
		orgID string
		want  Totals
	}{
		{"org with runs", acme.ID, Totals{Runs: 3, Cost: 133, Grants: 1200}}, // ok runs only
		{"org without runs", other.ID, Totals{Runs: 0, Cost: 0, Grants: 500}},
		{"unknown org", "org-nope", Totals{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.LedgerTotals(ctx, tt.orgID)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("LedgerTotals = %+v, want %+v", got, tt.want)
			}
		})
	}
	// The books balance: grants − charges = balance.
	tot, _ := db.LedgerTotals(ctx, acme.ID)
	if b := balance(t, db, acme.ID); b != tot.Grants-tot.Cost-c.Cost {
		t.Errorf("balance %d != grants %d − cost %d − cancelled %d", b, tot.Grants, tot.Cost, c.Cost)
	}
}

// BenchmarkRecordRunParallel measures the ledger write of the run path through group
// commit: each run announces its write, then records it, with c runs in flight.
// writes/commit shows how well the writer groups them.
func BenchmarkRecordRunParallel(b *testing.B) {
	for _, c := range []int{2, 16, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			ctx := context.Background()
			db := openDB(b, Options{})
			o := newOrg(b, db, "acme", 1<<60)
			a := newAgent(b, db, o.ID, "bot")
			// Callbacks run one after another on the writer goroutine, so these need
			// no lock; the commits are counted as changes of transaction.
			var last *sql.Tx
			commits := 0
			b.SetParallelism((c + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := okRun(a, "alice", "", 3)
					e := db.Expect()
					err := e.Tx(ctx, func(tx *Tx) error {
						if tx.tx != last {
							last, commits = tx.tx, commits+1
						}
						_, err := tx.RecordRun(ctx, r)
						return err
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if commits > 0 {
				b.ReportMetric(float64(b.N)/float64(commits), "writes/commit")
			}
			if n := count(b, db, `SELECT count(*) FROM ledger`); n != b.N {
				b.Errorf("%d ledger rows after %d runs", n, b.N)
			}
		})
	}
}

// TestNotFoundCodes: operations on a missing organization or agent say so with
// ENotFound, so that a race with a delete answers 404 rather than 500.
func TestNotFoundCodes(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 0)
	a := newAgent(t, db, o.ID, "bot")
	tests := []struct {
		name string
		fn   func(tx *Tx) error
	}{
		{"UpdateAgent with a new version, agent deleted", func(tx *Tx) error {
			gone := *a
			gone.ID = "agent-gone"
			return tx.UpdateAgent(ctx, &gone, true)
		}},
		{"GrantCredits to a missing org", func(tx *Tx) error {
			return tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: "org-gone", Amount: 1, KeyID: "k", Created: 1}, 1)
		}},
		{"Balance of a missing org", func(tx *Tx) error {
			return grant(ctx, tx, agentd.NewID("grant"), "org-gone", 1)
		}},
		{"RevokeKey of a missing key", func(tx *Tx) error { return tx.RevokeKey(ctx, "key-gone", 1) }},
		{"SetKeyBudget of a missing key", func(tx *Tx) error {
			return tx.SetKeyBudget(ctx, "key-gone", agentd.Budget{Set: true, Limit: 1, Period: agentd.PeriodDaily})
		}},
		{"UpdateAgent, agent deleted", func(tx *Tx) error {
			gone := *a
			gone.ID = "agent-gone"
			return tx.UpdateAgent(ctx, &gone, false)
		}},
		{"DeleteAgent, agent deleted", func(tx *Tx) error { return tx.DeleteAgent(ctx, o.ID, "agent-gone") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, db.Tx(ctx, tt.fn), agentd.ENotFound)
		})
	}
}

// TestBatchOutcomesAreTruthful: when one write of a batch makes SQLite abandon the
// whole transaction (an interrupted statement, ON CONFLICT ROLLBACK, SQLITE_FULL…),
// every caller is still told the truth: nil exactly when its write is stored.
func TestBatchOutcomesAreTruthful(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		bad  func(ctx context.Context, tx *Tx, orgID string) error
	}{
		{"statement interrupted by its context", func(ctx context.Context, tx *Tx, orgID string) error {
			// Tx.exec ignores cancellation; go under it to interrupt a statement anyway.
			// The statement never ends by itself; its context is cancelled once it runs.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var cancelled time.Time
			interrupt := func() error {
				if cancelled.IsZero() {
					cancelled = time.Now()
					cancel()
				} else if time.Since(cancelled) > eventGuard {
					return errors.New("the cancelled statement was never interrupted")
				}
				return nil
			}
			interruptStatement.Store(&interrupt)
			defer interruptStatement.Store(nil)
			_, err := tx.tx.ExecContext(ctx, `INSERT INTO credit_grants (id, org_id, amount, key_id, created_at)
				WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c)
				SELECT 'g'||x, ?, 0, 'k', 1 FROM c WHERE test_interrupt()`, orgID)
			return err
		}},
		{"ON CONFLICT ROLLBACK", func(ctx context.Context, tx *Tx, orgID string) error {
			_, err := tx.exec(ctx, `INSERT OR ROLLBACK INTO orgs (id, name, balance, created_at) VALUES (?, 'acme', 0, 1)`, agentd.NewID("org"))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t, Options{MaxWait: time.Second})
			o := newOrg(t, db, "acme", 0)
			grantOne := func(id string) func(tx *Tx) error {
				return func(tx *Tx) error { return grant(ctx, tx, id, o.ID, 1) }
			}
			// One batch, in this order: a good write, the bad one, a good write.
			errs := batchInOrder(t, db, grantOne("before"), func(tx *Tx) error { return tt.bad(ctx, tx, o.ID) }, grantOne("after"))
			if errs[1] != nil && strings.Contains(errs[1].Error(), "never interrupted") {
				t.Fatal(errs[1])
			}
			if errs[1] == nil {
				t.Fatal("the bad write succeeded; the test proves nothing")
			}
			stored := 0
			for i, id := range []string{"before", "after"} {
				err := errs[i*2]
				n := count(t, db, `SELECT count(*) FROM credit_grants WHERE id = ?`, id)
				stored += n
				if (err == nil) != (n == 1) {
					t.Errorf("write %q: err = %v but stored = %d", id, err, n)
				}
			}
			if b := balance(t, db, o.ID); b != agentd.Micros(stored) {
				t.Errorf("balance %d, want %d", b, stored)
			}
		})
	}
}

// TestLoneAnnouncedWriteDoesNotWait: once every announced write is queued the writer
// commits at once; a lone announced write never waits out MaxWait. (The race it
// guards against shows in about 1% of iterations under -race.)
func TestLoneAnnouncedWriteDoesNotWait(t *testing.T) {
	ctx := context.Background()
	// MaxWait is far beyond eventGuard: a write that waited it out misses the guard.
	db := openDB(t, Options{MaxWait: time.Hour, Synchronous: "OFF"})
	o := newOrg(t, db, "acme", 0)
	const n = 200
	for i := range n {
		e := db.Expect()
		done := make(chan error, 1)
		go func() {
			done <- e.Tx(ctx, func(tx *Tx) error {
				_, err := tx.exec(ctx, `UPDATE orgs SET created_at = created_at + 1 WHERE id = ?`, o.ID)
				return err
			})
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(eventGuard):
			db.w.expected.Store(0)
			go db.Tx(ctx, func(*Tx) error { return nil }) // wakes the writer so that the test can end
			t.Fatalf("lone announced write %d of %d did not commit in %v: it waited out MaxWait", i, n, eventGuard)
		}
	}
}
