package store

import (
	"context"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

// TestOrgsPage: organizations page in name order, each exactly once, with their
// stored balances; a cursor this store did not make is EInvalid.
func TestOrgsPage(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	balances := map[string]agentd.Micros{"delta": 0, "alpha": 5_000_000, "charlie": 7, "bravo": 0, "echo": 1}
	for _, name := range []string{"delta", "alpha", "charlie", "bravo", "echo"} {
		newOrg(t, db, name, balances[name])
	}
	tests := []struct {
		name  string
		limit int
		pages [][]string
	}{
		{"one page", 0, [][]string{{"alpha", "bravo", "charlie", "delta", "echo"}}},
		{"pages of two", 2, [][]string{{"alpha", "bravo"}, {"charlie", "delta"}, {"echo"}}},
		{"exactly full pages", 5, [][]string{{"alpha", "bravo", "charlie", "delta", "echo"}}},
		{"pages of one", 1, [][]string{{"alpha"}, {"bravo"}, {"charlie"}, {"delta"}, {"echo"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cursor := ""
			for i, want := range tt.pages {
				orgs, next, err := db.OrgsPage(ctx, cursor, tt.limit)
				if err != nil {
					t.Fatalf("page %d: %v", i, err)
				}
				var names []string
				for _, o := range orgs {
					names = append(names, o.Name)
					if o.Balance != balances[o.Name] || !strings.HasPrefix(o.ID, "org-") || o.CreatedAt.IsZero() {
						t.Errorf("page %d: %+v, want balance %d", i, o, balances[o.Name])
					}
				}
				if strings.Join(names, ",") != strings.Join(want, ",") {
					t.Fatalf("page %d = %v, want %v", i, names, want)
				}
				if last := i == len(tt.pages)-1; last != (next == "") {
					t.Fatalf("page %d: next cursor %q (last page: %v)", i, next, last)
				}
				cursor = next
			}
		})
	}
	t.Run("empty database page", func(t *testing.T) {
		orgs, next, err := openDB(t, Options{}).OrgsPage(ctx, "", 10)
		if err != nil || orgs == nil || len(orgs) != 0 || next != "" {
			t.Errorf("OrgsPage of no organizations = %v, %q, %v; want an empty page", orgs, next, err)
		}
	})
	for _, c := range []string{"!!!", "="} {
		_, _, err := db.OrgsPage(ctx, c, 10)
		wantCode(t, err, agentd.EInvalid)
	}
}

// TestCreditGrantsPage: an organization's grants page newest first, ties broken by
// id, each exactly once, with the name of the key that made them; another
// organization's grants never show.
func TestCreditGrantsPage(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	acme := newOrg(t, db, "acme", 0)
	other := newOrg(t, db, "other", 0)
	k := &agentd.Key{ID: agentd.NewID("key"), OrgID: acme.ID, Name: "billing desk", Owner: "o", Prefix: "agd_abcdefgh",
		Hash: strings.Repeat("ef", 32), Scopes: []agentd.Scope{agentd.ScopeOperator}, CreatedAt: fromMicros(1)}
	mustTx(t, db, func(tx *Tx) error { return tx.CreateKey(ctx, k) })

	// (created, id, amount, key): two grants share a time; the ids decide.
	type row struct {
		created int64
		id      string
		amount  agentd.Micros
		key     string
	}
	rows := []row{
		{100, "grant-a", 5_000_000, k.ID},
		{200, "grant-b", -1_000_000, k.ID},
		{300, "grant-c", 250_000, "key-gone"},
		{300, "grant-d", 1, k.ID},
		{400, "grant-e", 2, k.ID},
	}
	var bal agentd.Micros
	for _, r := range rows {
		bal += r.amount
		mustTx(t, db, func(tx *Tx) error {
			return tx.GrantCredits(ctx, &Grant{ID: r.id, OrgID: acme.ID, Amount: r.amount, KeyID: r.key, Created: r.created}, bal)
		})
	}
	mustTx(t, db, func(tx *Tx) error {
		return tx.GrantCredits(ctx, &Grant{ID: "grant-z", OrgID: other.ID, Amount: 9, KeyID: k.ID, Created: 500}, 9)
	})
	newestFirst := []string{"grant-e", "grant-d", "grant-c", "grant-b", "grant-a"}

	for _, limit := range []int{0, 1, 2, 3, 5, 6} {
		cursor, pages := "", 0
		var got []string
		for {
			page, next, err := db.CreditGrants(ctx, acme.ID, cursor, limit)
			if err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if limit > 0 && len(page) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(page))
			}
			for _, g := range page {
				got = append(got, g.ID)
				var want row
				for _, r := range rows {
					if r.id == g.ID {
						want = r
					}
				}
				wantName := "billing desk"
				if want.key == "key-gone" {
					wantName = ""
				}
				if g.OrgID != acme.ID || g.Amount != want.amount || g.KeyID != want.key || g.KeyName != wantName || !g.CreatedAt.Equal(fromMicros(want.created)) {
					t.Errorf("limit %d: grant %+v, want %+v (key name %q)", limit, g, want, wantName)
				}
			}
			pages++
			if next == "" {
				break
			}
			if pages > len(rows)+1 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			cursor = next
		}
		if strings.Join(got, ",") != strings.Join(newestFirst, ",") {
			t.Errorf("limit %d: grants %v, want %v", limit, got, newestFirst)
		}
	}

	page, next, err := db.CreditGrants(ctx, newOrg(t, db, "empty", 0).ID, "", 10)
	if err != nil || page == nil || len(page) != 0 || next != "" {
		t.Errorf("grants of an organization without any = %v, %q, %v; want an empty page", page, next, err)
	}
	for _, c := range []string{"!!!", encodeCursor("300"), encodeCursor("x|grant-c"), encodeCursor("300|agent-x")} {
		_, _, err := db.CreditGrants(ctx, acme.ID, c, 10)
		wantCode(t, err, agentd.EInvalid)
	}
}
