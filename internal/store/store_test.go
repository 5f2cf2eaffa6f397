package store

import (
	"context"
	"database/sql"
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
)

// openDB opens a fresh database in t's temporary directory and closes it when the
// test ends.
func openDB(t testing.TB, opts Options) *DB {
	t.Helper()
	db, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "agentd.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

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

// newOrg creates an organization with the given balance (granted once when > 0).
func newOrg(t testing.TB, db *DB, name string, balance agentd.Micros) *Org {
	t.Helper()
	ctx := context.Background()
	o := &Org{ID: agentd.NewID("org"), Name: name, Created: time.Now().UnixMicro()}
	mustTx(t, db, func(tx *Tx) error {
		if err := tx.CreateOrg(ctx, o); err != nil {
			return err
		}
		if balance > 0 {
			_, err := tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: o.ID, Amount: balance, KeyID: "key-test", Created: o.Created})
			return err
		}
		return nil
	})
	o.Balance = balance
	return o
}

func newAgent(t testing.TB, db *DB, orgID, name string) *agentd.Agent {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
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

// okRun is a successful run of agent a in session sid that costs cost.
func okRun(a *agentd.Agent, owner, sid string, cost agentd.Micros) *Run {
	return &Run{
		ID: agentd.NewID("run"), Created: time.Now().UnixMicro(), OrgID: a.OrgID, KeyID: "key-test", Owner: owner,
		AgentID: a.ID, AgentName: a.Name, AgentVersion: a.Version.Number, SessionID: sid,
		ModelRequested: "offline", Model: "offline", InputTokens: 10, OutputTokens: 5,
		UsageSource: agentd.UsageProvider, Cost: cost, LatencyMS: 7, Outcome: OutcomeOK,
		SaveTurn: sid != "", UserMessage: "question " + sid, Reply: "answer " + sid, UserTokens: 2, AssistantTokens: 3,
	}
}

func balance(t testing.TB, db *DB, orgID string) agentd.Micros {
	t.Helper()
	b, err := db.Balance(context.Background(), orgID)
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	return b
}

func wantCode(t testing.TB, err error, code string) {
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
			return tx.CreateOrg(ctx, &Org{ID: agentd.NewID("org"), Name: "acme", Created: 1})
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
		wantCode string
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
			if o.ID != tt.wantID || o.Name != "acme" || o.Balance != 0 {
				t.Errorf("Org(%q) = %+v", tt.idOrName, o)
			}
		})
	}

	t.Run("balance of unknown org", func(t *testing.T) {
		_, err := db.Balance(ctx, "org-nope")
		wantCode(t, err, agentd.ENotFound)
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
			var got agentd.Micros
			err := db.Tx(ctx, func(tx *Tx) (err error) {
				got, err = tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: o.ID, Amount: tt.amount, KeyID: "key-x", Created: 1})
				return err
			})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("grant of %d succeeded with balance %d", tt.amount, got)
				}
				if !strings.Contains(err.Error(), "CHECK") {
					t.Errorf("error %q does not name the CHECK constraint", err)
				}
			} else {
				if err != nil {
					t.Fatalf("grant of %d: %v", tt.amount, err)
				}
				grants++
				if got != tt.wantBalance {
					t.Errorf("returned balance %d, want %d", got, tt.wantBalance)
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
	t.Run("unknown org", func(t *testing.T) {
		err := db.Tx(ctx, func(tx *Tx) error {
			_, err := tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: "org-nope", Amount: 1, KeyID: "k", Created: 1})
			return err
		})
		if err == nil {
			t.Fatal("grant to an unknown org succeeded")
		}
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
	k := &Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "ci", Owner: "alice", Prefix: "agd_abcdefgh", Hash: strings.Repeat("ab", 32),
		Scopes: []agentd.Scope{agentd.ScopeRun, agentd.ScopeAgentsRead}, Created: 100}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, k) })

	t.Run("by hash", func(t *testing.T) {
		got, err := db.KeyByHash(ctx, k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != k.ID || got.OrgID != acme.ID || got.OrgName != "acme" || got.Owner != "alice" || got.Name != "ci" ||
			got.Prefix != k.Prefix || !slices.Equal(got.Scopes, k.Scopes) || got.Created != 100 || got.Revoked.Valid {
			t.Errorf("KeyByHash = %+v, want %+v", got, k)
		}
	})
	t.Run("unknown hash", func(t *testing.T) {
		_, err := db.KeyByHash(ctx, strings.Repeat("cd", 32))
		wantCode(t, err, agentd.ENotFound)
	})
	t.Run("duplicate hash", func(t *testing.T) {
		dup := *k
		dup.ID = agentd.NewID("key")
		wantCode(t, db.Tx(ctx, func(tx *Tx) error { return tx.CreateKey(ctx, &dup) }), agentd.EAlreadyExists)
	})

	revokes := []struct {
		name     string
		orgID    string
		id       string
		at       int64
		wantCode string
		wantAt   int64 // revoked_at afterwards; 0 = not revoked
	}{
		{"another org's key", other.ID, k.ID, 200, agentd.ENotFound, 0},
		{"unknown key", acme.ID, "key-nope", 200, agentd.ENotFound, 0},
		{"own key", acme.ID, k.ID, 300, "", 300},
		{"twice keeps the first time", acme.ID, k.ID, 400, "", 300},
		{"operator (any org)", "", k.ID, 500, "", 300},
	}
	for _, tt := range revokes {
		t.Run("revoke "+tt.name, func(t *testing.T) {
			err := db.Tx(ctx, func(tx *Tx) error { return tx.RevokeKey(ctx, tt.orgID, tt.id, tt.at) })
			if tt.wantCode != "" {
				wantCode(t, err, tt.wantCode)
			} else if err != nil {
				t.Fatal(err)
			}
			got, err := db.KeyByHash(ctx, k.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if got.Revoked.Valid != (tt.wantAt != 0) || got.Revoked.Int64 != tt.wantAt {
				t.Errorf("Revoked = %+v, want at %d", got.Revoked, tt.wantAt)
			}
		})
	}

	t.Run("list and count", func(t *testing.T) {
		k2 := &Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "new", Owner: "bob", Prefix: "agd_x", Hash: strings.Repeat("ef", 32), Scopes: []agentd.Scope{agentd.ScopeAdmin}, Created: 900}
		mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, k2) })
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
			wantCode string
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
				as, err := db.Agents(ctx, acme.ID, tt.includeInactive)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, a := range as {
					ids = append(ids, a.ID)
				}
				if !slices.Equal(ids, tt.want) {
					t.Errorf("Agents = %v, want %v", ids, tt.want)
				}
			})
		}
		as, err := db.Agents(ctx, newOrg(t, db, "empty", 0).ID, true)
		if err != nil || as == nil || len(as) != 0 {
			t.Errorf("Agents of an empty org = %v, %v; want empty non-nil", as, err)
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
			r := okRun(a, "alice", "s1", 10)
			mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(ctx, r) })
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

// stats is what RecordRun may change, read back in one go.
type stats struct {
	balance                agentd.Micros
	ledger, turns          int
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
		usage:   a.UsageCount, failed: a.FailedCount, latency: a.TotalLatencyMS, lastUsed: a.LastUsed,
	}
}

func TestRecordRun(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	o := newOrg(t, db, "acme", 1000)
	a := newAgent(t, db, o.ID, "bot")

	failed := okRun(a, "alice", "s1", 0)
	failed.Outcome, failed.ErrorCode, failed.SaveTurn = OutcomeFailed, agentd.EInferenceFailed, false
	noTurn := okRun(a, "alice", "s1", 5)
	noTurn.SaveTurn = false

	tests := []struct {
		name    string
		run     *Run
		wantErr bool
		// changes expected relative to before
		dBalance                  agentd.Micros
		dLedger, dTurns           int
		dUsage, dFailed, dLatency int64
	}{
		{"ok with turn", okRun(a, "alice", "s1", 300), false, -300, 1, 1, 1, 0, 7},
		{"ok without session", okRun(a, "alice", "", 100), false, -100, 1, 0, 1, 0, 7},
		{"ok, agent does not save turns", noTurn, false, -5, 1, 0, 1, 0, 7},
		{"free run", okRun(a, "alice", "s1", 0), false, 0, 1, 1, 1, 0, 7},
		{"failed inference", failed, false, 0, 1, 0, 0, 1, 0},
		{"cost exceeds balance", okRun(a, "alice", "s1", 596), true, 0, 0, 0, 0, 0, 0},
		{"cost exactly the balance", okRun(a, "alice", "s1", 595), false, -595, 1, 1, 1, 0, 7},
		{"anything over an empty balance", okRun(a, "alice", "s1", 1), true, 0, 0, 0, 0, 0, 0},
		{"duplicate run id", &Run{ID: failed.ID, Outcome: OutcomeOK, OrgID: o.ID, AgentID: a.ID}, true, 0, 0, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readStats(t, db, o.ID, a.ID)
			err := db.Tx(ctx, func(tx *Tx) error { return tx.RecordRun(ctx, tt.run) })
			if tt.wantErr != (err != nil) {
				t.Fatalf("RecordRun error = %v, want error %v", err, tt.wantErr)
			}
			after := readStats(t, db, o.ID, a.ID)
			got := [6]int64{int64(after.balance - before.balance), int64(after.ledger - before.ledger), int64(after.turns - before.turns),
				after.usage - before.usage, after.failed - before.failed, after.latency - before.latency}
			want := [6]int64{int64(tt.dBalance), int64(tt.dLedger), int64(tt.dTurns), tt.dUsage, tt.dFailed, tt.dLatency}
			if got != want {
				t.Errorf("changes (balance, ledger, turns, usage, failed, latency) = %v, want %v", got, want)
			}
			if tt.dUsage > 0 {
				if after.lastUsed == nil || after.lastUsed.UnixMicro() != tt.run.Created {
					t.Errorf("last_used = %v, want %d", after.lastUsed, tt.run.Created)
				}
			} else if !timeEq(after.lastUsed, before.lastUsed) {
				t.Errorf("last_used changed from %v to %v", before.lastUsed, after.lastUsed)
			}
			if tt.wantErr && tt.run.ID != failed.ID {
				if n := count(t, db, `SELECT count(*) FROM ledger WHERE run_id = ?`, tt.run.ID); n != 0 {
					t.Errorf("failed record left %d ledger rows", n)
				}
			}
		})
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
				return tx.RecordRun(ctx, runs[i])
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
		if got := count(t, db, `SELECT count(*) FROM ledger WHERE run_id = ?`, r.ID); got != want {
			t.Errorf("run %d: %d ledger rows, want %d", i, got, want)
		}
		if got := count(t, db, `SELECT count(*) FROM session_turns WHERE run_id = ?`, r.ID); got != want {
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
		r.UserMessage, r.Reply = msg, "re: "+msg
		mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(ctx, r) })
	}
	for i := range 5 {
		record(bot, "alice", "s1", fmt.Sprintf("m%d", i))
	}
	record(bot, "bob", "s1", "bob's")
	record(bot2, "alice", "s1", "bot2's")
	record(otherBot, "alice", "s1", "other org's")
	record(bot, "alice", "s2", "second session")

	read := func(k SessionKey, limit int) []string {
		var got []string
		err := db.History(ctx, k, func(tr Turn) bool {
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
	tests := []struct {
		name  string
		key   SessionKey
		limit int
		want  []string
	}{
		{"newest first", SessionKey{acme.ID, bot.ID, "alice", "s1"}, 100, []string{"m4", "m3", "m2", "m1", "m0"}},
		{"stops when fn returns false", SessionKey{acme.ID, bot.ID, "alice", "s1"}, 2, []string{"m4", "m3"}},
		{"stop after one", SessionKey{acme.ID, bot.ID, "alice", "s1"}, 1, []string{"m4"}},
		{"other owner", SessionKey{acme.ID, bot.ID, "bob", "s1"}, 100, []string{"bob's"}},
		{"other agent", SessionKey{acme.ID, bot2.ID, "alice", "s1"}, 100, []string{"bot2's"}},
		{"other org", SessionKey{other.ID, otherBot.ID, "alice", "s1"}, 100, []string{"other org's"}},
		{"other org, same agent id", SessionKey{other.ID, bot.ID, "alice", "s1"}, 100, nil},
		{"other session", SessionKey{acme.ID, bot.ID, "alice", "s2"}, 100, []string{"second session"}},
		{"unknown session", SessionKey{acme.ID, bot.ID, "alice", "s3"}, 100, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := read(tt.key, tt.limit); !slices.Equal(got, tt.want) {
				t.Errorf("History = %q, want %q", got, tt.want)
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
				_, err := tx.GrantCredits(ctx, &Grant{ID: fmt.Sprintf("grant-%03d", i), OrgID: o.ID, Amount: 1, KeyID: "k", Created: int64(i)})
				return err
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
	// A long MaxWait makes a leaked announcement visible: every batch would wait it out.
	const maxWait = 3 * time.Second
	insert := func(db *DB, name string) func(tx *Tx) error {
		return func(tx *Tx) error {
			return tx.CreateOrg(ctx, &Org{ID: agentd.NewID("org"), Name: name, Created: 1})
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
			start := time.Now()
			mustTx(t, db, insert(db, "after"))
			if d := time.Since(start); d > maxWait/2 {
				t.Errorf("a following Tx took %v: the writer waited for a write that will never come", d)
			}
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
		if err := tx.CreateOrg(ctx, &Org{ID: agentd.NewID("org"), Name: "ghost", Created: 1}); err != nil {
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
			return tx.CreateOrg(ctx, &Org{ID: agentd.NewID("org"), Name: fmt.Sprintf("after-%d", i), Created: 1})
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
				_, err := tx.GrantCredits(ctx, &Grant{ID: fmt.Sprintf("grant-%03d", i), OrgID: o.ID, Amount: 1, KeyID: "k", Created: 1})
				return err
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
		mustTx(t, db, func(tx *Tx) error {
			_, err := tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: acme.ID, Amount: amt, KeyID: "k", Created: 1})
			return err
		})
	}
	for _, cost := range []agentd.Micros{100, 0, 33} {
		r := okRun(a, "alice", "", cost)
		mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(ctx, r) })
	}
	f := okRun(a, "alice", "", 0)
	f.Outcome = OutcomeFailed
	mustTx(t, db, func(tx *Tx) error { return tx.RecordRun(ctx, f) })

	tests := []struct {
		name  string
		orgID string
		want  Totals
	}{
		{"org with runs", acme.ID, Totals{Runs: 3, Cost: 133, Grants: 1200}},
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
	if b := balance(t, db, acme.ID); b != tot.Grants-tot.Cost {
		t.Errorf("balance %d != grants %d − cost %d", b, tot.Grants, tot.Cost)
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
						return tx.RecordRun(ctx, r)
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
			_, err := tx.GrantCredits(ctx, &Grant{ID: agentd.NewID("grant"), OrgID: "org-gone", Amount: 1, KeyID: "k", Created: 1})
			return err
		}},
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
			ctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			defer cancel()
			_, err := tx.tx.ExecContext(ctx, `INSERT INTO credit_grants (id, org_id, amount, key_id, created_at)
				WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000)
				SELECT 'g'||x, ?, 0, 'k', 1 FROM c WHERE x = 0`, orgID)
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
			grant := func(id string) func(tx *Tx) error {
				return func(tx *Tx) error {
					_, err := tx.GrantCredits(ctx, &Grant{ID: id, OrgID: o.ID, Amount: 1, KeyID: "k", Created: 1})
					return err
				}
			}
			// One batch, in this order: a good write, the bad one, a good write.
			es := []*Expectation{db.Expect(), db.Expect(), db.Expect()}
			fns := []func(tx *Tx) error{grant("before"), func(tx *Tx) error { return tt.bad(ctx, tx, o.ID) }, grant("after")}
			errs := make([]error, len(fns))
			var wg sync.WaitGroup
			for i := range fns {
				wg.Go(func() { errs[i] = es[i].Tx(ctx, fns[i]) })
				time.Sleep(20 * time.Millisecond) // queue them in order
			}
			wg.Wait()
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
	const maxWait = 100 * time.Millisecond
	db := openDB(t, Options{MaxWait: maxWait, Synchronous: "OFF"})
	o := newOrg(t, db, "acme", 0)
	slow := 0
	const n = 200
	for range n {
		e := db.Expect()
		var (
			wg   sync.WaitGroup
			took time.Duration
			err  error
		)
		wg.Go(func() {
			start := time.Now()
			err = e.Tx(ctx, func(tx *Tx) error {
				_, err := tx.exec(ctx, `UPDATE orgs SET created_at = created_at + 1 WHERE id = ?`, o.ID)
				return err
			})
			took = time.Since(start)
		})
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if took >= maxWait {
			slow++
		}
	}
	if slow > 0 {
		t.Errorf("%d of %d lone announced writes waited out MaxWait", slow, n)
	}
}
