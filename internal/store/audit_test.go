package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// auditAt is an audit entry of org by key at t (microseconds after auditT0).
func auditAt(org, key string, action agentd.AuditAction, t int64) *agentd.AuditEntry {
	return &agentd.AuditEntry{
		CreatedAt: fromMicros(auditT0 + t), OrgID: org,
		ActorKeyID: key, ActorOwner: "owner-" + key, ActorOrgID: org, ClientIP: "192.0.2.1", RequestID: "req-" + fmt.Sprint(t),
		Action: action, TargetType: agentd.TargetKey, TargetID: "key-target", Detail: json.RawMessage(`{"n":` + fmt.Sprint(t) + `}`),
	}
}

const auditT0 = 1_800_000_000_000_000

// TestAudit: entries are kept as written and listed newest first, a page at a
// time, by organization, action, actor and time; every entry appears once
// however the pages fall, also when several share a time.
func TestAudit(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	var all []*agentd.AuditEntry
	actions := []agentd.AuditAction{agentd.AuditKeyCreate, agentd.AuditCreditsGrant, agentd.AuditAgentUpdate}
	for i := range 60 {
		org := []string{"org-a", "org-b"}[i%2]
		key := []string{"key-1", "key-2", "key-3"}[i%3]
		// Times repeat (i/4): entries of one microsecond are ordered by id.
		all = append(all, auditAt(org, key, actions[i%5%3], int64(i/4)))
	}
	mustTx(t, db, func(tx *Tx) error {
		for _, e := range all {
			if err := tx.Audit(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	newest := slices.Clone(all)
	slices.SortFunc(newest, func(a, b *agentd.AuditEntry) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})

	t.Run("kept as written", func(t *testing.T) {
		got, _, err := db.AuditPage(ctx, agentd.AuditFilter{Limit: 1})
		if err != nil || len(got) != 1 {
			t.Fatalf("AuditPage: %v %v", got, err)
		}
		want := *newest[0]
		if !strings.HasPrefix(want.ID, "audit-") {
			t.Errorf("id %q", want.ID)
		}
		g := got[0]
		if g.ID != want.ID || !g.CreatedAt.Equal(want.CreatedAt) || g.OrgID != want.OrgID || g.ActorKeyID != want.ActorKeyID ||
			g.ActorOwner != want.ActorOwner || g.ActorOrgID != want.ActorOrgID || g.ClientIP != want.ClientIP ||
			g.RequestID != want.RequestID || g.Action != want.Action || g.TargetType != want.TargetType ||
			g.TargetID != want.TargetID || string(g.Detail) != string(want.Detail) {
			t.Errorf("entry %+v, want %+v", g, want)
		}
	})

	mid := fromMicros(auditT0 + 7)
	filters := []struct {
		name  string
		f     agentd.AuditFilter
		match func(e *agentd.AuditEntry) bool
	}{
		{"everything", agentd.AuditFilter{}, func(e *agentd.AuditEntry) bool { return true }},
		{"org", agentd.AuditFilter{OrgID: "org-b"}, func(e *agentd.AuditEntry) bool { return e.OrgID == "org-b" }},
		{"action", agentd.AuditFilter{Action: agentd.AuditCreditsGrant}, func(e *agentd.AuditEntry) bool { return e.Action == agentd.AuditCreditsGrant }},
		{"actor", agentd.AuditFilter{ActorKeyID: "key-2"}, func(e *agentd.AuditEntry) bool { return e.ActorKeyID == "key-2" }},
		{"from", agentd.AuditFilter{From: mid}, func(e *agentd.AuditEntry) bool { return !e.CreatedAt.Before(mid) }},
		{"to", agentd.AuditFilter{To: mid}, func(e *agentd.AuditEntry) bool { return e.CreatedAt.Before(mid) }},
		{"org, action, actor and time", agentd.AuditFilter{OrgID: "org-a", Action: agentd.AuditKeyCreate, ActorKeyID: "key-1", From: fromMicros(auditT0 + 2), To: mid},
			func(e *agentd.AuditEntry) bool {
				return e.OrgID == "org-a" && e.Action == agentd.AuditKeyCreate && e.ActorKeyID == "key-1" &&
					!e.CreatedAt.Before(fromMicros(auditT0+2)) && e.CreatedAt.Before(mid)
			}},
		{"nothing", agentd.AuditFilter{OrgID: "org-none"}, func(e *agentd.AuditEntry) bool { return false }},
	}
	for _, ft := range filters {
		var want []string
		for _, e := range newest {
			if ft.match(e) {
				want = append(want, e.ID)
			}
		}
		for _, limit := range []int{1, 7, 1000} {
			t.Run(fmt.Sprintf("%s/limit %d", ft.name, limit), func(t *testing.T) {
				f := ft.f
				f.Limit = limit
				var got []string
				for pages := 0; ; pages++ {
					if pages > len(all)+1 {
						t.Fatal("pages never end")
					}
					es, next, err := db.AuditPage(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					if len(es) > limit || (next != "" && len(es) != limit) {
						t.Fatalf("page of %d with next %q at limit %d", len(es), next, limit)
					}
					for _, e := range es {
						got = append(got, e.ID)
					}
					if next == "" {
						break
					}
					f.Cursor = next
				}
				if !slices.Equal(got, want) {
					t.Errorf("got %d entries %v, want %d %v", len(got), got, len(want), want)
				}
			})
		}
	}

	t.Run("default and largest page", func(t *testing.T) {
		for _, tc := range []struct{ limit, want int }{{0, min(len(all), agentd.DefaultAuditPage)}, {5000, len(all)}} {
			es, _, err := db.AuditPage(ctx, agentd.AuditFilter{Limit: tc.limit})
			if err != nil || len(es) != tc.want {
				t.Errorf("limit %d: %d entries, %v; want %d", tc.limit, len(es), err, tc.want)
			}
		}
	})
	t.Run("malformed cursor", func(t *testing.T) {
		for _, c := range []string{"!", "bm9wZQ", auditCursor(5, "key-x"), "LTF8YXVkaXQteA"} {
			_, _, err := db.AuditPage(ctx, agentd.AuditFilter{Cursor: c})
			wantCode(t, err, agentd.EInvalid)
		}
	})
}

// TestAuditRollsBackWithItsChange: an audit entry is part of its write; a write
// that fails after it (here a duplicate organization name) keeps neither the
// change nor the entry, and the writes around it keep both.
func TestAuditRollsBackWithItsChange(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	newOrg(t, db, "taken", 0)
	create := func(name string) error {
		o := &agentd.Org{ID: agentd.NewID("org"), Name: name, CreatedAt: now()}
		return db.Tx(ctx, func(tx *Tx) error {
			// The entry first: the failure after it must take it back.
			if err := tx.Audit(ctx, &agentd.AuditEntry{CreatedAt: o.CreatedAt, OrgID: o.ID, Action: agentd.AuditOrgCreate,
				TargetType: agentd.TargetOrg, TargetID: o.ID}); err != nil {
				return err
			}
			return tx.CreateOrg(ctx, o)
		})
	}
	errs := make(chan error, 3)
	for _, name := range []string{"first", "taken", "second"} {
		go func() { errs <- create(name) }() // likely one batch: the failure rolls back alone
	}
	failed := 0
	for range 3 {
		if err := <-errs; err != nil {
			wantCode(t, err, agentd.EAlreadyExists)
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d creates failed, want 1", failed)
	}
	if n := count(t, db, `SELECT count(*) FROM audit_log`); n != 2 {
		t.Errorf("%d audit rows, want 2 (one per organization created)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM audit_log a JOIN orgs o ON o.id = a.target_id`); n != 2 {
		t.Errorf("%d audit rows name a stored organization, want 2", n)
	}
	// An entry with no detail is kept as an empty object.
	es, _, err := db.AuditPage(ctx, agentd.AuditFilter{Limit: 1})
	if err != nil || len(es) != 1 || string(es[0].Detail) != "{}" {
		t.Errorf("newest entry %+v, %v; want detail {}", es, err)
	}
	// A callback's own error after the entry: nothing is kept either.
	boom := errors.New("boom")
	err = db.Tx(ctx, func(tx *Tx) error {
		if err := tx.Audit(ctx, auditAt("org-x", "key-x", agentd.AuditKeyRevoke, time.Now().UnixMicro()-auditT0)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx: %v, want boom", err)
	}
	if n := count(t, db, `SELECT count(*) FROM audit_log`); n != 2 {
		t.Errorf("%d audit rows after a failed write, want 2", n)
	}
}

// TestAuditPagePlan: the listing reads a range of an index, newest first, with no
// sort, for one organization (admins) and for all (operators).
func TestAuditPagePlan(t *testing.T) {
	db := openDB(t, Options{})
	for _, tc := range []struct {
		where, index string
		args         []any
	}{
		{"org_id = ? AND created_at >= ? AND action = ? AND (created_at, id) < (?, ?)", "audit_log_org_created", []any{"org-a", 1, "key.create", 5, "audit-x"}},
		{"1 = 1 AND actor_key_id = ? AND (created_at, id) < (?, ?)", "audit_log_created", []any{"key-1", 5, "audit-x"}},
	} {
		rows, err := db.query(context.Background(), `EXPLAIN QUERY PLAN SELECT `+auditColumns+` FROM audit_log WHERE `+tc.where+
			` ORDER BY created_at DESC, id DESC LIMIT ?`, append(tc.args, 10)...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, tc.index) || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("plan %q: want a range of %s without a sort", p, tc.index)
		}
	}
}
