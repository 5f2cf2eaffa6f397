package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
)

// usagePricedConfig adds a model at 1000 credits per million tokens each way:
// every token costs exactly 1000 micro-credits.
const usagePricedConfig = "models:\n  - id: offline-priced\n    provider: offline\n    price: {input: 1000, output: 1000}\n"

func toMicros(credits float64) int64 { return int64(math.Round(credits * 1e6)) }

// csvMicros parses a CSV cost, credits with six decimals, exactly.
func csvMicros(t *testing.T, s string) int64 {
	t.Helper()
	whole, frac, ok := strings.Cut(s, ".")
	w, err1 := strconv.ParseInt(whole, 10, 64)
	f, err2 := strconv.ParseInt(frac, 10, 64)
	if !ok || len(frac) != 6 || err1 != nil || err2 != nil {
		t.Fatalf("CSV cost %q is not credits with 6 decimals", s)
	}
	return w*1e6 + f
}

// usageRun is what a run answered, to compare the usage record with.
type usageRun struct {
	res   *client.RunResult
	agent string
	keyID string
	cost  int64 // micro-credits
}

// TestUsageRecord: the usage endpoints, the CSV export and `agentd usage` all
// report the runs that were made, no more, each once, with costs that add up to
// what the balance lost.
func TestUsageRecord(t *testing.T) {
	s := startServer(t, usagePricedConfig, nil)
	ctx := context.Background()
	op := s.client(s.Key)
	if _, err := op.GrantCredits(ctx, "default", 100); err != nil {
		t.Fatal(err)
	}
	mintKey := func(c *client.Client, name string, scopes ...string) *client.Key {
		t.Helper()
		k, err := c.CreateKey(ctx, client.KeySpec{Name: name, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	runners := []*client.Key{mintKey(op, "runner 1", "run"), mintKey(op, "runner 2", "run")}
	usageKey := mintKey(op, "accounting", "usage")
	reader := mintKey(op, "reader", "agents:read", "run")
	uc := s.client(usageKey.Secret)

	// Three agents on two models. No agent may be called "usage": GET
	// /api/v3/agents/usage would shadow it.
	agentIDs := map[string]string{}
	for _, a := range []struct{ name, model string }{{"support_bot", "offline"}, {"premium", "offline-priced"}, {"usage_bot", "offline-priced"}} {
		spec := supportBot()
		spec.Name, spec.Model = client.Ptr(a.name), client.Ptr(a.model)
		got, err := op.CreateAgent(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		agentIDs[a.name] = got.ID
	}
	names := []string{"support_bot", "premium", "usage_bot"}
	spec := supportBot()
	spec.Name = client.Ptr("Usage")
	if _, err := op.CreateAgent(ctx, spec); statusOf(err) != 422 || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("an agent named usage: %v, want 422 reserved", err)
	}

	before, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var runs []usageRun
	const n = 30
	for i := range n {
		k := runners[i%2]
		agent := names[i%3]
		msg := []string{"how do i reset my password", "what are your opening hours", "hello"}[i%3] + strings.Repeat(" please", i%4)
		res, err := s.client(k.Secret).Run(ctx, agent, msg, "")
		if err != nil {
			t.Fatal(err)
		}
		cost := int64(0)
		if res.Model == "offline-priced" {
			cost = int64(res.Usage.InputTokens+res.Usage.OutputTokens) * 1000
		}
		runs = append(runs, usageRun{res: res, agent: agent, keyID: k.ID, cost: cost})
	}
	after, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drop := toMicros(before.Balance) - toMicros(after.Balance)
	var wantCost, wantTokens int64
	wantByModel := map[string]int64{}
	for _, r := range runs {
		wantCost += r.cost
		wantTokens += int64(r.res.Usage.TotalTokens)
		wantByModel[r.res.Model]++
	}
	if drop != wantCost || drop == 0 {
		t.Fatalf("balance dropped %d micro-credits; the runs cost %d", drop, wantCost)
	}

	t.Run("agents/usage", func(t *testing.T) {
		var raw struct{ Data map[string]any }
		if err := uc.Do(ctx, "GET", "/api/v3/agents/usage", nil, nil, &raw); err != nil {
			t.Fatal(err)
		}
		for camel, snake := range map[string]string{"totalUsage": "total_usage", "totalTokens": "total_tokens",
			"averageTokensPerRequest": "average_tokens_per_request", "mostUsedModel": "most_used_model", "usageByModel": "usage_by_model"} {
			c, okc := raw.Data[camel]
			s, oks := raw.Data[snake]
			if !okc || !oks || !reflect.DeepEqual(c, s) {
				t.Errorf("%s = %v (%v), %s = %v (%v): want both, equal", camel, c, okc, snake, s, oks)
			}
		}
		u, err := uc.Usage(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if u.TotalUsage != n || u.TotalTokens != wantTokens || !reflect.DeepEqual(u.UsageByModel, wantByModel) {
			t.Errorf("usage = %+v; want %d runs, %d tokens, by model %v", u, n, wantTokens, wantByModel)
		}
		if want := math.Round(float64(wantTokens)/n*100) / 100; u.AverageTokensPerRequest != want {
			t.Errorf("average tokens per request %v, want %v", u.AverageTokensPerRequest, want)
		}
		if u.MostUsedModel != "offline-priced" { // 20 of the 30 runs
			t.Errorf("most used model %q", u.MostUsedModel)
		}
		var modelCost int64
		for _, m := range u.Models {
			modelCost += toMicros(m.Cost)
			if m.Runs != wantByModel[m.Model] || m.TotalTokens != m.InputTokens+m.OutputTokens {
				t.Errorf("model entry %+v", m)
			}
		}
		if modelCost != wantCost {
			t.Errorf("models cost %d, want %d", modelCost, wantCost)
		}

		// Filtered by agent (name or id), and by days that hold no runs.
		today := time.Now().UTC()
		for _, ref := range []string{"premium", agentIDs["premium"]} {
			var out struct{ Data client.AgentsUsage }
			if err := uc.Do(ctx, "GET", "/api/v3/agents/usage?agent="+ref, nil, nil, &out); err != nil {
				t.Fatal(err)
			}
			if out.Data.TotalUsage != n/3 || len(out.Data.UsageByModel) != 1 || out.Data.UsageByModel["offline-priced"] != n/3 {
				t.Errorf("agent %s: %+v", ref, out.Data)
			}
		}
		if err := uc.Do(ctx, "GET", "/api/v3/agents/usage?agent=nobody", nil, nil, nil); statusOf(err) != 404 {
			t.Errorf("unknown agent: %v", err)
		}
		for _, rg := range [][2]string{{today.AddDate(0, 0, 2).Format(time.DateOnly), ""}, {"", today.AddDate(0, 0, -2).Format(time.DateOnly)}} {
			u, err := uc.Usage(ctx, rg[0], rg[1])
			if err != nil {
				t.Fatal(err)
			}
			if u.TotalUsage != 0 || u.TotalTokens != 0 || len(u.UsageByModel) != 0 || u.MostUsedModel != "" {
				t.Errorf("usage %v: %+v, want none", rg, u)
			}
		}
		u, err = uc.Usage(ctx, today.AddDate(0, 0, -1).Format(time.DateOnly), today.AddDate(0, 0, 1).Format(time.RFC3339))
		if err != nil || u.TotalUsage != n {
			t.Errorf("usage around today: %+v, %v", u, err)
		}
	})

	t.Run("agents/usage is not the agent route", func(t *testing.T) {
		for _, path := range []string{"/api/v3/agents/usage", "/api/v3/agents/usage/"} {
			var out struct{ Data map[string]any }
			if err := uc.Do(ctx, "GET", path, nil, nil, &out); err != nil || out.Data["total_usage"] == nil {
				t.Errorf("%s with the usage key: %v, %v", path, out.Data, err)
			}
			// A key that may read agents, but not usage, is refused rather than shown
			// an agent.
			if err := s.client(reader.Secret).Do(ctx, "GET", path, nil, nil, nil); statusOf(err) != 403 {
				t.Errorf("%s with an agents:read key: %v, want 403", path, err)
			}
		}
		if a, err := s.client(reader.Secret).Agent(ctx, agentIDs["usage_bot"]); err != nil || a.Name != "usage_bot" {
			t.Errorf("the agent usage_bot by id: %v, %v", a, err)
		}
	})

	// records walks every page of f and returns the rows in order.
	records := func(t *testing.T, c *client.Client, f client.UsageFilter) []client.UsageRecord {
		t.Helper()
		var all []client.UsageRecord
		for pages := 0; ; pages++ {
			if pages > 2*n {
				t.Fatal("pagination does not end")
			}
			p, err := c.UsageRecords(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if f.Limit > 0 && len(p.Data) > f.Limit {
				t.Fatalf("page of %d rows, limit %d", len(p.Data), f.Limit)
			}
			all = append(all, p.Data...)
			if p.NextCursor == nil {
				return all
			}
			f.Cursor = *p.NextCursor
		}
	}
	byRun := map[string]usageRun{}
	for _, r := range runs {
		byRun[r.res.RunID] = r
	}

	var all []client.UsageRecord
	t.Run("records pages", func(t *testing.T) {
		pages := 0
		f := client.UsageFilter{Limit: 10}
		for {
			p, err := uc.UsageRecords(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			all = append(all, p.Data...)
			if p.NextCursor == nil {
				break
			}
			f.Cursor = *p.NextCursor
		}
		if pages != 3 {
			t.Errorf("%d pages of 10 for %d rows, want 3", pages, n)
		}
		seen := map[string]int{}
		var cost int64
		for i, rec := range all {
			seen[rec.RunID]++
			cost += toMicros(rec.Cost)
			r, ok := byRun[rec.RunID]
			if !ok {
				t.Errorf("record of an unknown run %s", rec.RunID)
				continue
			}
			created, err := time.Parse(time.RFC3339Nano, rec.CreatedAt)
			if err != nil || !strings.HasSuffix(rec.CreatedAt, "Z") || len(rec.CreatedAt) != len("2006-01-02T15:04:05.000000Z") {
				t.Errorf("created_at %q is not RFC 3339 UTC with microseconds", rec.CreatedAt)
			}
			if i > 0 && created.Before(mustParse(all[i-1].CreatedAt)) {
				t.Errorf("records out of order at %d", i)
			}
			if rec.Model != r.res.Model || rec.ModelRequested != r.res.Model || rec.AgentName != r.agent || rec.AgentID != agentIDs[r.agent] ||
				rec.KeyID != r.keyID || rec.InputTokens != r.res.Usage.InputTokens || rec.OutputTokens != r.res.Usage.OutputTokens ||
				rec.TotalTokens != r.res.Usage.TotalTokens || toMicros(rec.Cost) != r.cost || rec.Outcome != "ok" || rec.ErrorCode != nil ||
				rec.SessionID != nil || rec.UsageSource != r.res.Usage.Source || rec.AgentVersion != 1 || rec.OrgID == "" {
				t.Errorf("record %+v does not match run %+v", rec, r)
			}
		}
		if len(seen) != n || len(all) != n {
			t.Errorf("%d records, %d distinct, want each of %d runs once", len(all), len(seen), n)
		}
		if cost != wantCost {
			t.Errorf("records cost %d, want %d", cost, wantCost)
		}
	})

	t.Run("records filters", func(t *testing.T) {
		mid := all[n/2]
		tests := []struct {
			name  string
			f     client.UsageFilter
			match func(r client.UsageRecord) bool
		}{
			{"agent by name", client.UsageFilter{Agent: "premium"}, func(r client.UsageRecord) bool { return r.AgentName == "premium" }},
			{"agent by id", client.UsageFilter{Agent: agentIDs["usage_bot"]}, func(r client.UsageRecord) bool { return r.AgentName == "usage_bot" }},
			{"model", client.UsageFilter{Model: "offline"}, func(r client.UsageRecord) bool { return r.Model == "offline" }},
			{"key", client.UsageFilter{Key: runners[1].ID}, func(r client.UsageRecord) bool { return r.KeyID == runners[1].ID }},
			{"key and model", client.UsageFilter{Key: runners[0].ID, Model: "offline-priced"},
				func(r client.UsageRecord) bool { return r.KeyID == runners[0].ID && r.Model == "offline-priced" }},
			{"from (RFC 3339, inclusive)", client.UsageFilter{From: mid.CreatedAt},
				func(r client.UsageRecord) bool { return !mustParse(r.CreatedAt).Before(mustParse(mid.CreatedAt)) }},
			{"to (RFC 3339, exclusive)", client.UsageFilter{To: mid.CreatedAt},
				func(r client.UsageRecord) bool { return mustParse(r.CreatedAt).Before(mustParse(mid.CreatedAt)) }},
			{"today as days", client.UsageFilter{From: time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly), To: time.Now().UTC().Format(time.DateOnly)},
				func(r client.UsageRecord) bool { return true }},
			{"from in an hour (Unix seconds)", client.UsageFilter{From: strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)},
				func(r client.UsageRecord) bool { return false }},
			{"to an hour ago (Unix seconds)", client.UsageFilter{To: strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)},
				func(r client.UsageRecord) bool { return false }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var want []string
				for _, r := range all {
					if tt.match(r) {
						want = append(want, r.RunID)
					}
				}
				for _, limit := range []int{0, 4} {
					f := tt.f
					f.Limit = limit
					var got []string
					for _, r := range records(t, uc, f) {
						got = append(got, r.RunID)
					}
					if !slices.Equal(got, want) {
						t.Errorf("limit %d: %d records %v, want %d %v", limit, len(got), got, len(want), want)
					}
				}
				if tt.name == "from (RFC 3339, inclusive)" && (len(want) == 0 || want[0] != mid.RunID) {
					t.Errorf("from the middle record's time does not start with it")
				}
			})
		}
	})

	t.Run("CSV", func(t *testing.T) {
		var buf bytes.Buffer
		if err := uc.UsageCSV(ctx, client.UsageFilter{}, &buf); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		wantHeader := []string{"run_id", "created_at", "org_id", "key_id", "owner", "agent_id", "agent_name", "agent_version",
			"session_id", "model_requested", "model", "input_tokens", "output_tokens", "total_tokens", "usage_source", "cost",
			"latency_ms", "outcome", "error_code", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"}
		if len(rows) == 0 || !slices.Equal(rows[0], wantHeader) {
			t.Fatalf("CSV header %v, want %v", rows[:min(1, len(rows))], wantHeader)
		}
		if len(rows)-1 != len(all) {
			t.Fatalf("CSV has %d rows, JSON %d", len(rows)-1, len(all))
		}
		var cost int64
		for i, row := range rows[1:] {
			rec := all[i]
			cost += csvMicros(t, row[15])
			want := []string{rec.RunID, rec.CreatedAt, rec.OrgID, rec.KeyID, rec.Owner, rec.AgentID, rec.AgentName, "1", "",
				rec.ModelRequested, rec.Model, strconv.Itoa(rec.InputTokens), strconv.Itoa(rec.OutputTokens), strconv.Itoa(rec.TotalTokens),
				rec.UsageSource, fmt.Sprintf("%.6f", rec.Cost), strconv.FormatInt(rec.LatencyMS, 10), "ok", "",
				strconv.Itoa(rec.CachedInputTokens), strconv.Itoa(rec.CacheWriteTokens), strconv.Itoa(rec.ReasoningTokens)}
			if !slices.Equal(row, want) {
				t.Errorf("CSV row %d = %v, want %v", i, row, want)
			}
		}
		if cost != wantCost {
			t.Errorf("CSV cost %d, JSON %d", cost, wantCost)
		}

		// Filters apply; limit and cursor do not.
		buf.Reset()
		if err := uc.UsageCSV(ctx, client.UsageFilter{Agent: "premium"}, &buf); err != nil {
			t.Fatal(err)
		}
		if rows, _ := csv.NewReader(&buf).ReadAll(); len(rows) != 1+n/3 {
			t.Errorf("CSV for one agent: %d lines, want %d", len(rows), 1+n/3)
		}
		req, _ := http.NewRequest("GET", s.URL+"/api/v3/usage/records?format=csv&limit=1&cursor=x", nil)
		req.Header.Set("Authorization", "Bearer "+usageKey.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := csv.NewReader(resp.Body).ReadAll()
		resp.Body.Close()
		if ct, cd := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"); resp.StatusCode != 200 ||
			ct != "text/csv; charset=utf-8" || !strings.HasPrefix(cd, "attachment") || len(body) != 1+n {
			t.Errorf("raw CSV: %d %q %q, %d lines", resp.StatusCode, ct, cd, len(body))
		}
	})

	t.Run("summary", func(t *testing.T) {
		for _, g := range []string{"day", "agent", "model", "key"} {
			sum, err := uc.UsageSummary(ctx, g, "", "")
			if err != nil {
				t.Fatal(err)
			}
			var cost, runsN, tokens int64
			groups := map[string]bool{}
			for _, r := range sum.Data {
				cost += toMicros(r.Cost)
				runsN += r.Runs
				tokens += r.TotalTokens
				groups[r.Group] = true
				if r.Failed != 0 || r.TotalTokens != r.InputTokens+r.OutputTokens || r.AvgLatencyMS < 0 {
					t.Errorf("group by %s: row %+v", g, r)
				}
			}
			if sum.GroupBy != g || cost != drop || runsN != n || tokens != wantTokens {
				t.Errorf("group by %s: cost %d (balance drop %d), %d runs, %d tokens", g, cost, drop, runsN, tokens)
			}
			want := map[string]int{"agent": 3, "model": 2, "key": 2}[g]
			if want != 0 && len(groups) != want {
				t.Errorf("group by %s: groups %v", g, groups)
			}
			if g == "agent" && !(groups["support_bot"] && groups["premium"] && groups["usage_bot"]) {
				t.Errorf("agent groups %v", groups)
			}
			if g == "key" && !(groups[runners[0].ID] && groups[runners[1].ID]) {
				t.Errorf("key groups %v", groups)
			}
		}
		tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
		if sum, err := uc.UsageSummary(ctx, "day", tomorrow, tomorrow); err != nil || len(sum.Data) != 0 {
			t.Errorf("summary of tomorrow: %+v, %v", sum, err)
		}
	})

	t.Run("tenant isolation", func(t *testing.T) {
		orgB, err := op.CreateOrg(ctx, "org_b_usage")
		if err != nil {
			t.Fatal(err)
		}
		kb, err := op.CreateKey(ctx, client.KeySpec{Name: "b", OrgID: orgB.ID, Scopes: []string{"admin"}})
		if err != nil {
			t.Fatal(err)
		}
		b := s.client(kb.Secret)
		u, err := b.Usage(ctx, "", "")
		if err != nil || u.TotalUsage != 0 || u.TotalTokens != 0 || len(u.UsageByModel) != 0 || len(u.Models) != 0 {
			t.Errorf("B's usage: %+v, %v", u, err)
		}
		for _, f := range []client.UsageFilter{{}, {Key: runners[0].ID}, {Model: "offline-priced"}} {
			if p, err := b.UsageRecords(ctx, f); err != nil || len(p.Data) != 0 || p.NextCursor != nil {
				t.Errorf("B's records %+v: %+v, %v", f, p, err)
			}
		}
		// A's cursor does not reach A's rows from B either.
		p, err := uc.UsageRecords(ctx, client.UsageFilter{Limit: 1})
		if err != nil || p.NextCursor == nil {
			t.Fatal(p, err)
		}
		if pb, err := b.UsageRecords(ctx, client.UsageFilter{Cursor: *p.NextCursor}); err != nil || len(pb.Data) != 0 {
			t.Errorf("B with A's cursor: %+v, %v", pb, err)
		}
		var buf bytes.Buffer
		if err := b.UsageCSV(ctx, client.UsageFilter{}, &buf); err != nil || strings.Count(buf.String(), "\n") != 1 {
			t.Errorf("B's CSV: %q, %v", buf.String(), err)
		}
		for _, g := range []string{"day", "agent", "model", "key"} {
			if sum, err := b.UsageSummary(ctx, g, "", ""); err != nil || len(sum.Data) != 0 {
				t.Errorf("B's summary by %s: %+v, %v", g, sum, err)
			}
		}
		for _, ref := range []string{"premium", agentIDs["premium"]} {
			if err := b.Do(ctx, "GET", "/api/v3/usage/records?agent="+url.QueryEscape(ref), nil, nil, nil); statusOf(err) != 404 {
				t.Errorf("B filtering by A's agent %s: %v", ref, err)
			}
		}
	})

	t.Run("403 without the usage scope", func(t *testing.T) {
		c := s.client(runners[0].Secret)
		for _, path := range []string{"/api/v3/agents/usage", "/api/v3/usage/records", "/api/v3/usage/records?format=csv", "/api/v3/usage/summary?group_by=day"} {
			if err := c.Do(ctx, "GET", path, nil, nil, nil); statusOf(err) != 403 {
				t.Errorf("%s with a run key: %v", path, err)
			}
		}
		if err := s.client("").Do(ctx, "GET", "/api/v3/usage/records", nil, nil, nil); statusOf(err) != 401 {
			t.Errorf("no key: %v", err)
		}
	})

	t.Run("422 on bad parameters", func(t *testing.T) {
		tests := []struct{ path, loc string }{
			{"/api/v3/usage/records?limit=0", "limit"},
			{"/api/v3/usage/records?limit=1001", "limit"},
			{"/api/v3/usage/records?limit=ten", "limit"},
			{"/api/v3/usage/records?cursor=not-a-cursor", "cursor"},
			{"/api/v3/usage/records?format=xml", "format"},
			{"/api/v3/usage/records?from=last+tuesday", "from"},
			{"/api/v3/usage/records?from=2025-02-01&to=2025-01-01", "to"},
			{"/api/v3/usage/records?format=csv&to=tomorrow", "to"},
			{"/api/v3/usage/summary", "group_by"},
			{"/api/v3/usage/summary?group_by=week", "group_by"},
			{"/api/v3/usage/summary?group_by=day&from=2025-13-40", "from"},
			{"/api/v3/agents/usage?to=soon", "to"},
		}
		for _, tt := range tests {
			err := uc.Do(ctx, "GET", tt.path, nil, nil, nil)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != 422 || ce.Code != "invalid" {
				t.Errorf("%s: %v, want 422", tt.path, err)
				continue
			}
			var detail []struct {
				Loc []any `json:"loc"`
			}
			if json.Unmarshal([]byte(ce.Detail), &detail) != nil || len(detail) != 1 || fmt.Sprint(detail[0].Loc) != "[query "+tt.loc+"]" {
				t.Errorf("%s: detail %s, want one violation at query.%s", tt.path, ce.Detail, tt.loc)
			}
		}
	})

	t.Run("agentd usage", func(t *testing.T) {
		cli := func(env map[string]string, args ...string) (string, error) {
			var stdout, stderr bytes.Buffer
			err := run(ctx, append([]string{"usage"}, args...), func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
			return stdout.String(), err
		}
		totalCost := fmt.Sprintf("%d.%06d", drop/1e6, drop%1e6)
		for _, g := range []string{"day", "agent", "model", "key"} {
			out, err := cli(nil, "--url", s.URL, "--key", usageKey.Secret, "--group-by", g)
			if err != nil {
				t.Fatalf("agentd usage --group-by %s: %v", g, err)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			header := strings.Fields(lines[0])
			total := strings.Fields(lines[len(lines)-1])
			if header[0] != strings.ToUpper(g) || total[0] != "TOTAL" || total[1] != strconv.Itoa(n) || total[6] != totalCost {
				t.Errorf("agentd usage --group-by %s:\n%s\nwant %d runs costing %s", g, out, n, totalCost)
			}
			// The table is aligned: every column starts where the header's does.
			col := strings.Index(lines[0], "RUNS")
			for _, l := range lines[1:] {
				if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
					t.Errorf("misaligned line %q (RUNS at %d)", l, col)
				}
			}
			if g == "agent" && !(strings.Contains(out, "\npremium ") && strings.Contains(out, "\nsupport_bot ") && strings.Contains(out, "\nusage_bot ")) {
				t.Errorf("agent table lacks an agent:\n%s", out)
			}
		}
		// The environment supplies the server and key; the default grouping is day.
		out, err := cli(map[string]string{"AGENTD_URL": s.URL, "AGENTD_KEY": usageKey.Secret})
		if err != nil || !strings.HasPrefix(out, "DAY ") || !strings.Contains(out, totalCost) {
			t.Errorf("agentd usage from the environment: %v\n%s", err, out)
		}
		out, err = cli(nil, "--url", s.URL, "--key", usageKey.Secret, "--csv")
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil || len(rows) != 1+n || rows[0][0] != "run_id" {
			t.Errorf("agentd usage --csv: %d rows, %v", len(rows), err)
		}
		for _, bad := range [][]string{
			{"--url", s.URL}, // no key
			{"--url", s.URL, "--key", usageKey.Secret, "--group-by", "week"}, // 422
			{"--url", s.URL, "--key", runners[0].Secret},                     // 403
			{"--url", s.URL, "--key", usageKey.Secret, "extra"},
		} {
			if _, err := cli(nil, bad...); err == nil {
				t.Errorf("agentd usage %v succeeded", bad)
			}
		}
	})
}

func mustParse(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}
