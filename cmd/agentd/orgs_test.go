package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
)

// TestAdminOrgs: GET /api/v3/admin/orgs lists every organization in name order,
// a page at a time, each with its balance, what runs in flight hold of it and
// what is available; only operator keys may.
func TestAdminOrgs(t *testing.T) {
	u := newSlowStream(t, []string{"held ", "then ", "settled"}, 0).gated(t, 1)
	s := startServer(t, streamConfig(u, ""), nil)
	ctx := context.Background()
	op := newStreamAgents(t, s)
	for _, name := range []string{"charlie", "alpha", "bravo"} {
		if _, err := op.CreateOrg(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := op.GrantCredits(ctx, "default", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "bravo", 2.5); err != nil {
		t.Fatal(err)
	}

	all := func(limit int) map[string]*client.Org {
		t.Helper()
		got, names, cursor := map[string]*client.Org{}, []string{}, ""
		for pages := 0; ; pages++ {
			page, next, err := op.Orgs(ctx, cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			if limit > 0 && len(page) > limit || pages > 10 {
				t.Fatalf("limit %d: a page of %d, %d pages", limit, len(page), pages)
			}
			for _, o := range page {
				names, got[o.Name] = append(names, o.Name), o
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if strings.Join(names, " ") != "alpha bravo charlie default" {
			t.Errorf("limit %d: organizations %v", limit, names)
		}
		return got
	}
	for _, limit := range []int{0, 1, 3, 4, 200} {
		orgs := all(limit)
		if b := orgs["bravo"]; b.Balance != 2.5 || b.Held != 0 || b.Available != 2.5 || !strings.HasPrefix(b.ID, "org-") || b.CreatedAt == "" {
			t.Errorf("bravo: %+v", b)
		}
	}

	// A run in flight holds money: the listing shows it held, and no longer once
	// the run has settled.
	resp := postStream(t, s, "slow", "ping", "")
	defer resp.Body.Close()
	firstDelta := make(chan struct{})
	events := make(chan []sseEvent, 1)
	go func() {
		closed := false
		events <- readEvents(resp, func(ev sseEvent) bool {
			if ev.Name == "delta" && !closed {
				closed = true
				close(firstDelta)
			}
			return false
		})
	}()
	await(t, firstDelta, "the first delta")
	d := all(0)["default"]
	if d.Held <= 0 || d.HoldsInFlight != 1 || d.Available != d.Balance-d.Held || d.Balance != 10 {
		t.Errorf("default with a run in flight: %+v", d)
	}
	u.open()
	if evs := <-events; evs[len(evs)-1].Data != "[DONE]" {
		t.Fatalf("the run did not finish: %+v", evs)
	}
	d = all(0)["default"]
	if d.Held != 0 || d.HoldsInFlight != 0 || d.Balance >= 10 || d.Available != d.Balance {
		t.Errorf("default after the run settled: %+v", d)
	}

	t.Run("bad pages", func(t *testing.T) {
		for _, q := range []string{"limit=0", "limit=201", "limit=many", "cursor=!!!"} {
			if code := statusOfGet(t, s.URL+"/api/v3/admin/orgs?"+q, s.Key); code != 422 {
				t.Errorf("?%s: %d, want 422", q, code)
			}
		}
	})
	t.Run("operators only", func(t *testing.T) {
		keys := nonOperatorKeys(t, op)
		for name, key := range keys {
			if _, _, err := s.client(key).Orgs(ctx, "", 0); statusOf(err) != 403 {
				t.Errorf("%s: %v, want 403", name, err)
			}
		}
		if code := statusOfGet(t, s.URL+"/api/v3/admin/orgs", ""); code != 401 {
			t.Errorf("no key: %d, want 401", code)
		}
	})
}

// TestCreditHistory: GET /api/v3/admin/orgs/{id or name}/credits lists an
// organization's grants and corrections, the newest first, a page at a time,
// with the key that made each; only operator keys may.
func TestCreditHistory(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := startServerWith(t, "", nil, &serveHooks{clock: clk})
	ctx := context.Background()
	op := s.client(s.Key)
	acme, err := op.CreateOrg(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	desk, err := op.CreateKey(ctx, client.KeySpec{Name: "billing desk", Scopes: []string{"operator"}})
	if err != nil {
		t.Fatal(err)
	}
	grants := []struct {
		by     *client.Client
		amount float64
	}{{op, 5}, {s.client(desk.Secret), 2.25}, {op, -1.5}, {s.client(desk.Secret), 0.000001}, {op, 10}}
	for _, g := range grants {
		clk.Advance(time.Minute)
		if _, err := g.by.GrantCredits(ctx, "acme", g.amount); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := op.GrantCredits(ctx, "default", 99); err != nil { // another organization's
		t.Fatal(err)
	}

	for _, org := range []string{"acme", acme.ID} {
		for _, limit := range []int{0, 1, 2, 5, 200} {
			var got []*client.CreditGrant
			cursor := ""
			for pages := 0; ; pages++ {
				page, next, err := op.CreditHistory(ctx, org, cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				if limit > 0 && len(page) > limit || pages > 10 {
					t.Fatalf("limit %d: a page of %d, %d pages", limit, len(page), pages)
				}
				got = append(got, page...)
				if next == "" {
					break
				}
				cursor = next
			}
			if len(got) != len(grants) {
				t.Fatalf("%s, limit %d: %d grants, want %d", org, limit, len(got), len(grants))
			}
			for i, g := range got {
				want := grants[len(grants)-1-i] // newest first
				wantKey, wantName := s.bootstrapKeyID(t), "bootstrap"
				if want.by != op {
					wantKey, wantName = desk.ID, "billing desk"
				}
				wantTime := clk.Now().Add(-time.Duration(i) * time.Minute).UTC().Format("2006-01-02T15:04:05Z")
				if g.Amount != want.amount || g.KeyID != wantKey || g.KeyName == nil || *g.KeyName != wantName ||
					g.CreatedAt != wantTime || !strings.HasPrefix(g.ID, "grant-") {
					t.Errorf("%s, limit %d: grant %d = %+v (key name %v), want %v by %s at %s", org, limit, i, g, g.KeyName, want.amount, wantName, wantTime)
				}
			}
		}
	}

	page, next, err := op.CreditHistory(ctx, "default", "", 0)
	if err != nil || len(page) != 1 || page[0].Amount != 99 || next != "" {
		t.Errorf("default's history: %+v %q %v", page, next, err)
	}
	if fresh, err := op.CreateOrg(ctx, "fresh"); err != nil {
		t.Fatal(err)
	} else if page, next, err := op.CreditHistory(ctx, fresh.ID, "", 0); err != nil || page == nil || len(page) != 0 || next != "" {
		t.Errorf("an organization without grants: %v %q %v", page, next, err)
	}
	var body struct {
		OrgID   string            `json:"org_id"`
		OrgName string            `json:"org_name"`
		Data    []json.RawMessage `json:"data"`
		Next    *string           `json:"next_cursor"`
	}
	if err := op.Do(ctx, "GET", "/api/v3/admin/orgs/acme/credits?limit=2", nil, nil, &body); err != nil ||
		body.OrgID != acme.ID || body.OrgName != "acme" || len(body.Data) != 2 || body.Next == nil {
		t.Errorf("the page's envelope: %+v %v", body, err)
	}
	if _, _, err := op.CreditHistory(ctx, "nowhere", "", 0); statusOf(err) != 404 {
		t.Errorf("an unknown organization: %v, want 404", err)
	}
	for _, q := range []string{"limit=0", "limit=201", "cursor=!!!", "cursor=bm9wZQ"} {
		if code := statusOfGet(t, s.URL+"/api/v3/admin/orgs/acme/credits?"+q, s.Key); code != 422 {
			t.Errorf("?%s: %d, want 422", q, code)
		}
	}
	t.Run("operators only", func(t *testing.T) {
		for name, key := range nonOperatorKeys(t, op) {
			for _, org := range []string{"acme", "default"} {
				if _, _, err := s.client(key).CreditHistory(ctx, org, "", 0); statusOf(err) != 403 {
					t.Errorf("%s on %s: %v, want 403", name, org, err)
				}
			}
		}
	})
}

// orgKeys mints, as the operator op, keys without the operator scope: acme's
// admin (an organization's admin) and default's run key.
func nonOperatorKeys(t *testing.T, op *client.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	if _, err := op.CreateOrg(ctx, "acme"); err != nil && statusOf(err) != 400 {
		t.Fatal(err)
	}
	admin, err := op.CreateKey(ctx, client.KeySpec{Name: "acme admin", OrgID: "acme", Scopes: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	runner, err := op.CreateKey(ctx, client.KeySpec{Name: "runner", Scopes: []string{"run", "usage"}})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"an organization's admin": admin.Secret, "a run key": runner.Secret}
}

// bootstrapKeyID is the id of s's operator key.
func (s *testServer) bootstrapKeyID(t *testing.T) string {
	t.Helper()
	keys, err := s.client(s.Key).Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "bootstrap" {
			return k.ID
		}
	}
	t.Fatal("no bootstrap key")
	return ""
}

// getStatus is the status of a GET of url with key ("" for none).
func statusOfGet(t *testing.T, url, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
