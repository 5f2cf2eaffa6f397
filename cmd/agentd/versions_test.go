package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/client"
)

// versionsPage is GET /api/v3/agents/{agent}/versions.
type versionsPage struct {
	ActiveVersion int `json:"active_version"`
	Versions      []struct {
		Version     int     `json:"version"`
		AuthorKeyID string  `json:"author_key_id"`
		Note        string  `json:"note"`
		Model       string  `json:"model"`
		EvalStatus  *string `json:"eval_status"`
		Active      bool    `json:"active"`
	} `json:"versions"`
	NextCursor *string `json:"next_cursor"`
}

// lastVersion is the agent_version of the newest ledger row of agent.
func lastVersion(t *testing.T, c *client.Client, agent string) int {
	t.Helper()
	var all []int
	f := client.UsageFilter{Agent: agent}
	for {
		p, err := c.UsageRecords(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Data {
			all = append(all, r.AgentVersion)
		}
		if p.NextCursor == nil {
			break
		}
		f.Cursor = *p.NextCursor
	}
	if len(all) == 0 {
		t.Fatal("no ledger rows")
	}
	return all[len(all)-1]
}

// TestVersionsEndToEnd edits an agent, lists and diffs its versions, rolls back,
// stores a draft that serves nothing until it is pinned or activated, and pins
// runs on both APIs; the ledger names the version that ran every time.
func TestVersionsEndToEnd(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	a, err := op.CreateAgent(ctx, supportBot())
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, header http.Header, in, out any) error {
		return op.Do(ctx, method, path, header, in, out)
	}
	// v2: new instructions and one demonstration changed, with a note.
	if err := do("PATCH", "/api/v3/agents/support_bot", nil, map[string]any{
		"instructions": "Be brief.", "note": "shorter",
		"demonstrations": []map[string]string{
			{"input": "How do I reset my password?", "output": "Settings → Reset password."},
			{"input": "What are your opening hours?", "output": "8:00 to 20:00 every day."},
			{"input": "Where are you?", "output": "Berlin."},
		},
	}, nil); err != nil {
		t.Fatal(err)
	}
	var page versionsPage
	if err := do("GET", "/api/v3/agents/"+a.ID+"/versions", nil, nil, &page); err != nil {
		t.Fatal(err)
	}
	if page.ActiveVersion != 2 || len(page.Versions) != 2 || page.Versions[0].Version != 2 || !page.Versions[0].Active || page.Versions[1].Active ||
		page.Versions[0].Note != "shorter" || page.Versions[0].AuthorKeyID == "" || page.Versions[0].EvalStatus != nil || page.Versions[0].Model != "offline" {
		t.Fatalf("versions = %+v", page)
	}
	// Paged, newest first.
	if err := do("GET", "/api/v3/agents/support_bot/versions?limit=1", nil, nil, &page); err != nil || page.NextCursor == nil || page.Versions[0].Version != 2 {
		t.Fatalf("first page %+v %v", page, err)
	}
	if err := do("GET", "/api/v3/agents/support_bot/versions?limit=1&cursor="+*page.NextCursor, nil, nil, &page); err != nil || page.NextCursor != nil || page.Versions[0].Version != 1 {
		t.Fatalf("second page %+v %v", page, err)
	}
	var v1 struct {
		Data struct {
			Version      int    `json:"version"`
			Instructions string `json:"instructions"`
			Active       bool   `json:"active"`
		}
	}
	if err := do("GET", "/api/v3/agents/support_bot/versions/1", nil, nil, &v1); err != nil || v1.Data.Version != 1 || v1.Data.Instructions != "Be concise." || v1.Data.Active {
		t.Fatalf("version 1 = %+v %v", v1, err)
	}
	var diff struct {
		Changes []struct {
			Field    string
			Old, New any
		}
		Demonstrations []struct {
			Change   string
			OldIndex *int `json:"old_index"`
			NewIndex *int `json:"new_index"`
		}
		Unified string
	}
	if err := do("GET", "/api/v3/agents/support_bot/versions/2/diff?against=1", nil, nil, &diff); err != nil {
		t.Fatal(err)
	}
	fields := []string{}
	for _, c := range diff.Changes {
		fields = append(fields, c.Field)
	}
	if strings.Join(fields, ",") != "instructions,demonstrations" || diff.Changes[0].Old != "Be concise." || diff.Changes[0].New != "Be brief." {
		t.Errorf("changes = %+v", diff.Changes)
	}
	if len(diff.Demonstrations) != 2 || diff.Demonstrations[0].Change != "changed" || diff.Demonstrations[1].Change != "added" {
		t.Errorf("demonstrations = %+v", diff.Demonstrations)
	}
	if !strings.Contains(diff.Unified, "-  Be concise.\n+  Be brief.\n") || !strings.HasPrefix(diff.Unified, "--- version 1\n+++ version 2\n") {
		t.Errorf("unified:\n%s", diff.Unified)
	}

	run := func(header http.Header) string {
		t.Helper()
		var out struct{ Response string }
		if err := do("POST", "/api/v3/agents/run-agents/support_bot/run", header, map[string]any{"message": "How do I reset my password?"}, &out); err != nil {
			t.Fatal(err)
		}
		return out.Response
	}
	if got := run(nil); got != "Settings → Reset password." || lastVersion(t, op, a.ID) != 2 {
		t.Fatalf("run of v2 = %q, version %d", got, lastVersion(t, op, a.ID))
	}
	// Roll back: the pointer moves, no version is made, the next run is v1's.
	if err := do("POST", "/api/v3/agents/support_bot/versions/1/activate", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := run(nil); got != "Use Settings, then Reset password." || lastVersion(t, op, a.ID) != 1 {
		t.Fatalf("run after rollback = %q, version %d", got, lastVersion(t, op, a.ID))
	}
	if err := do("GET", "/api/v3/agents/support_bot/versions", nil, nil, &page); err != nil || len(page.Versions) != 2 || page.ActiveVersion != 1 || !page.Versions[1].Active {
		t.Fatalf("after rollback %+v %v", page, err)
	}
	got, err := op.Agent(ctx, "support_bot")
	if err != nil || got.Version != 1 || got.SystemPrompt != "Be concise." {
		t.Fatalf("agent after rollback %+v %v", got, err)
	}
	audit := auditAll(t, op, client.AuditFilter{Action: "agent.activate_version"})
	if len(audit) != 1 || audit[0].TargetID != a.ID || !strings.Contains(string(audit[0].Detail), `"previous_version":2`) {
		t.Errorf("activation audit = %+v", audit)
	}

	// A draft: stored, listed inactive, serves nothing unpinned.
	var draft struct{ Data struct{ Version int } }
	if err := do("POST", "/api/v3/agents/support_bot/versions", nil, map[string]any{
		"activate": false, "note": "draft", "demonstrations": []map[string]string{{"input": "How do I reset my password?", "output": "Draft answer."}},
	}, &draft); err != nil || draft.Data.Version != 3 {
		t.Fatalf("draft %+v %v", draft, err)
	}
	if got := run(nil); got != "Use Settings, then Reset password." || lastVersion(t, op, a.ID) != 1 {
		t.Fatalf("a draft served: %q", got)
	}
	// Pinned on the run endpoint, on estimate, and on /v1 (model and header).
	if got := run(http.Header{"X-Agent-Version": {"3"}}); got != "Draft answer." || lastVersion(t, op, a.ID) != 3 {
		t.Fatalf("pinned draft run = %q version %d", got, lastVersion(t, op, a.ID))
	}
	if got := run(http.Header{"X-Agent-Version": {"2"}}); got != "Settings → Reset password." || lastVersion(t, op, a.ID) != 2 {
		t.Fatalf("pinned v2 = %q", got)
	}
	var est struct {
		AgentID string `json:"agent_id"`
	}
	if err := do("POST", "/api/v3/agents/run-agents/support_bot/estimate", http.Header{"X-Agent-Version": {"9"}}, map[string]any{"message": "hi"}, &est); statusOf(err) != 404 ||
		!strings.Contains(err.Error(), "no version 9") {
		t.Errorf("estimate of an unknown version: %v", err)
	}
	if err := do("POST", "/api/v3/agents/run-agents/support_bot/estimate", http.Header{"X-Agent-Version": {"3"}}, map[string]any{"message": "hi"}, &est); err != nil || est.AgentID != a.ID {
		t.Errorf("pinned estimate: %+v %v", est, err)
	}
	if err := do("POST", "/api/v3/agents/run-agents/support_bot/run", http.Header{"X-Agent-Version": {"9"}}, map[string]any{"message": "hi"}, nil); statusOf(err) != 404 ||
		!strings.Contains(err.Error(), "no version 9") {
		t.Errorf("run of an unknown version: %v", err)
	}
	chat := func(model string, header http.Header) (string, error) {
		var out struct {
			Choices []struct{ Message struct{ Content string } }
		}
		err := do("POST", "/v1/chat/completions", header, map[string]any{"model": model,
			"messages": []map[string]string{{"role": "user", "content": "How do I reset my password?"}}}, &out)
		if err != nil {
			return "", err
		}
		return out.Choices[0].Message.Content, nil
	}
	if got, err := chat("agent/support_bot@3", nil); err != nil || got != "Draft answer." || lastVersion(t, op, a.ID) != 3 {
		t.Fatalf("/v1 agent/support_bot@3 = %q %v", got, err)
	}
	if got, err := chat("agent/support_bot", http.Header{"X-Agent-Version": {"2"}}); err != nil || got != "Settings → Reset password." || lastVersion(t, op, a.ID) != 2 {
		t.Fatalf("/v1 with X-Agent-Version 2 = %q %v", got, err)
	}
	status, _, body, err := rawDo("POST", s.URL+"/v1/chat/completions", s.Key, nil,
		`{"model": "agent/support_bot@7", "messages": [{"role": "user", "content": "hi"}]}`)
	if err != nil || status != 404 || !strings.Contains(string(body), "no version 7") || !strings.Contains(string(body), "model_not_found") {
		t.Errorf("/v1 unknown version: %d %s %v", status, body, err)
	}
	if got, err := chat("agent/support_bot", nil); err != nil || got != "Use Settings, then Reset password." {
		t.Fatalf("/v1 unpinned = %q %v", got, err)
	}
	// Promote the draft.
	if err := do("POST", "/api/v3/agents/support_bot/versions/3/activate?require_evals=true", nil, nil, nil); statusOf(err) != 409 {
		t.Errorf("require_evals on a version never evaluated: %v", err)
	}
	if err := do("POST", "/api/v3/agents/support_bot/versions/3/activate", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := run(nil); got != "Draft answer." || lastVersion(t, op, a.ID) != 3 {
		t.Fatalf("run after promotion = %q", got)
	}
	// Ledger rows by version.
	p, err := op.UsageRecords(ctx, client.UsageFilter{Agent: a.ID, Version: 2})
	if err != nil || len(p.Data) != 3 {
		t.Fatalf("records of version 2: %+v %v", p, err)
	}
	for _, r := range p.Data {
		if r.AgentVersion != 2 {
			t.Errorf("record %+v", r)
		}
	}
}

// TestCanary sends 10 % of unpinned runs to a canary version, keeps sessions on
// the version they started with, and stops when the canary is removed.
func TestCanary(t *testing.T) {
	s := startServer(t, "", nil)
	ctx := context.Background()
	op := s.client(s.Key)
	a, err := op.CreateAgent(ctx, supportBot())
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, header http.Header, in, out any) error {
		return op.Do(ctx, method, path, header, in, out)
	}
	if err := do("POST", "/api/v3/agents/support_bot/versions", nil, map[string]any{"activate": false,
		"demonstrations": []map[string]string{{"input": "How do I reset my password?", "output": "Canary."}}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		canary any
		status int
	}{
		{"the active version", map[string]any{"version": 1, "percent": 10}, 422},
		{"an unknown version", map[string]any{"version": 5, "percent": 10}, 422},
		{"a percent above 100", map[string]any{"version": 2, "percent": 101}, 422},
		{"no percent", map[string]any{"version": 2}, 422},
	} {
		if err := do("PATCH", "/api/v3/agents/support_bot", nil, map[string]any{"canary": tc.canary}, nil); statusOf(err) != tc.status {
			t.Errorf("canary on %s: %v, want %d", tc.name, err, tc.status)
		}
	}
	if err := do("PATCH", "/api/v3/agents/support_bot", nil, map[string]any{"canary": map[string]any{"version": 2, "percent": 10}}, nil); err != nil {
		t.Fatal(err)
	}
	var info struct {
		Data struct {
			Canary *struct {
				Version int
				Percent float64
			}
		}
	}
	if err := do("GET", "/api/v3/agents/support_bot", nil, nil, &info); err != nil || info.Data.Canary == nil || info.Data.Canary.Version != 2 || info.Data.Canary.Percent != 10 {
		t.Fatalf("agent's canary %+v %v", info, err)
	}
	run := func(sid string) string {
		t.Helper()
		h := http.Header{}
		if sid != "" {
			h.Set("X-Session-ID", sid)
		}
		var out struct{ Response string }
		if err := do("POST", "/api/v3/agents/run-agents/support_bot/run", h, map[string]any{"message": "How do I reset my password?"}, &out); err != nil {
			t.Fatal(err)
		}
		return out.Response
	}
	const n = 1000
	canary := 0
	for range n {
		if run("") == "Canary." {
			canary++
		}
	}
	// Binomial(1000, 0.1): mean 100, sd 9.5; 60–140 is beyond 4 sd either side.
	if canary < 60 || canary > 140 {
		t.Errorf("%d of %d runs went to the canary, want about 100", canary, n)
	}
	// The ledger agrees, by version.
	rows, err := op.UsageRecords(ctx, client.UsageFilter{Agent: a.ID, Version: 2, Limit: 1000})
	if err != nil || len(rows.Data) != canary {
		t.Errorf("ledger rows of the canary: %d %v, want %d", len(rows.Data), err, canary)
	}

	// Sessions stick: every turn of a session answers from the same version.
	sessions := map[string]string{}
	onCanary := 0
	for i := range 60 {
		sid := "s-" + strconv.Itoa(i)
		first := run(sid)
		for range 3 {
			if got := run(sid); got != first {
				t.Fatalf("session %s switched from %q to %q", sid, first, got)
			}
		}
		sessions[sid] = first
		if first == "Canary." {
			onCanary++
		}
	}
	// Raising the percent only moves sessions onto the canary.
	if err := do("PATCH", "/api/v3/agents/support_bot", nil, map[string]any{"canary": map[string]any{"version": 2, "percent": 50}}, nil); err != nil {
		t.Fatal(err)
	}
	for sid, first := range sessions {
		if first == "Canary." && run(sid) != "Canary." {
			t.Errorf("session %s left the canary when its percent rose", sid)
		}
	}
	// Removed: everyone on the active version.
	if err := do("PATCH", "/api/v3/agents/support_bot", nil, map[string]any{"canary": nil}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if got := run(fmt.Sprint("s-", i)); got == "Canary." {
			t.Fatalf("a run went to a removed canary")
		}
	}
}
