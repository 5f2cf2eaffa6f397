package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/clock/clocktest"
)

// ratedServer starts agentd with config on a fake clock (the windows move only
// when the test moves it), with the support bot agent.
func ratedServer(t *testing.T, config string) (*testServer, *clocktest.Fake, *client.Client) {
	t.Helper()
	clk := clocktest.New(time.Date(2026, 5, 4, 9, 0, 0, 0, time.UTC))
	s := startServerWith(t, config, nil, &serveHooks{clock: clk})
	op := s.client(s.Key)
	if _, err := op.CreateAgent(context.Background(), supportBot()); err != nil {
		t.Fatal(err)
	}
	return s, clk, op
}

const runBody = `{"message": "how do i reset my password"}`

// statuses sends n requests at once and counts their statuses; each 429 is
// checked by check.
func statuses(t *testing.T, n int, do func(i int) (int, http.Header, []byte, error), check func(h http.Header, body []byte)) map[int]int {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			status, h, body, err := do(i)
			if err != nil {
				t.Error(err)
				return
			}
			if status == http.StatusTooManyRequests && check != nil {
				check(h, body)
			}
			mu.Lock()
			got[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

// wantRateLimited checks a 429 in the API's shape: Retry-After, and the limit's
// name and value in the body. It returns the body.
func wantRateLimited(t *testing.T, h http.Header, body []byte, limit string, value float64, retryAfter string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("429 body %q: %v", body, err)
		return nil
	}
	if m["code"] != "rate_limited" || m["limit"] != limit || m["limit_value"] != value || !strings.Contains(fmt.Sprint(m["detail"]), limit) {
		t.Errorf("429 body %s, want code rate_limited, limit %s, limit_value %v", body, limit, value)
	}
	if got := h.Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After %q, want %q (%s)", got, retryAfter, body)
	}
	if retryAfter != "" && fmt.Sprint(m["retry_after"]) != retryAfter {
		t.Errorf("retry_after %v in the body, want %s", m["retry_after"], retryAfter)
	}
	return m
}

// TestRateLimitRequests: requests per minute of a key admit exactly the limit of
// concurrent requests, on every route that does work, with 429 rate_limited and
// Retry-After in NuGen's shape and in OpenAI's; listings are not counted; the
// window moves with the clock.
func TestRateLimitRequests(t *testing.T) {
	s, clk, op := ratedServer(t, "limits:\n  rate:\n    key: {rpm: 3}\n")
	ctx := context.Background()
	run := func(int) (int, http.Header, []byte, error) {
		return rawDo("POST", s.URL+runPath("support_bot"), s.Key, nil, runBody)
	}
	got := statuses(t, 12, run, func(h http.Header, body []byte) {
		wantRateLimited(t, h, body, "key_rpm", 3, "60")
	})
	if got[200] != 3 || got[429] != 9 {
		t.Fatalf("statuses %v, want exactly 3 × 200 and 9 × 429", got)
	}

	// OpenAI's envelope on /v1, with the same members and Retry-After.
	status, h, body := rawCall(t, "POST", s.URL+"/v1/chat/completions", s.Key, nil,
		`{"model": "agent/support_bot", "messages": [{"role": "user", "content": "hi"}]}`)
	var oe struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &oe); err != nil || status != 429 || h.Get("Retry-After") != "60" {
		t.Fatalf("/v1/chat/completions: %d %v %s", status, h, body)
	}
	if e := oe.Error; e["type"] != "rate_limit_error" || e["code"] != "rate_limit_exceeded" || e["limit"] != "key_rpm" ||
		e["limit_value"] != 3.0 || e["retry_after"] != 60.0 || !strings.Contains(fmt.Sprint(e["message"]), "key_rpm") {
		t.Errorf("OpenAI error %s", body)
	}
	for _, path := range []string{"/v1/embeddings", "/v1/completions", "/api/v3/agents/run-agents/support_bot/estimate"} {
		status, h, body := rawCall(t, "POST", s.URL+path, s.Key, nil, `{"model": "offline-hash-embed", "input": "x", "prompt": "x", "message": "x"}`)
		if status != 429 || h.Get("Retry-After") == "" {
			t.Errorf("%s: %d %s, want 429", path, status, body)
		}
	}

	// Listings and reads do no work: not counted, never refused.
	for _, path := range []string{"/api/v3/agents", "/v1/models", "/api/v3/billing", "/api/v3/keys"} {
		if status, _, body := rawCall(t, "GET", s.URL+path, s.Key, nil, ""); status != 200 {
			t.Errorf("GET %s: %d %s", path, status, body)
		}
	}

	clk.Advance(59 * time.Second)
	status, h, body = rawCall(t, "POST", s.URL+runPath("support_bot"), s.Key, nil, runBody)
	if status != 429 {
		t.Fatalf("a second before the window moves: %d %s", status, body)
	}
	wantRateLimited(t, h, body, "key_rpm", 3, "1")
	clk.Advance(time.Second)
	// A minute after the first three: three more, of which an estimate.
	if status, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/support_bot/estimate", s.Key, nil, runBody); status != 200 {
		t.Fatalf("estimate: %d %s", status, body)
	}
	got = statuses(t, 6, run, nil)
	if got[200] != 2 || got[429] != 4 {
		t.Errorf("the next minute: %v, want 2 × 200 (with the estimate, 3) and 4 × 429", got)
	}
	if _, err := op.Agents(ctx, false); err != nil {
		t.Error(err)
	}

	t.Run("an organization's limit over its keys", func(t *testing.T) {
		s, _, op := ratedServer(t, "limits:\n  rate:\n    org: {rpm: 5}\n")
		var keys []string
		for i := range 2 {
			k, err := op.CreateKey(ctx, client.KeySpec{Name: fmt.Sprint("app", i)})
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k.Secret)
		}
		got := statuses(t, 20, func(i int) (int, http.Header, []byte, error) {
			return rawDo("POST", s.URL+runPath("support_bot"), keys[i%2], nil, runBody)
		}, func(h http.Header, body []byte) { wantRateLimited(t, h, body, "org_rpm", 5, "60") })
		if got[200] != 5 {
			t.Errorf("statuses %v, want exactly 5 × 200 over the organization's two keys", got)
		}
	})
}

// tokenUsage is what a run of the support bot uses, and the most it may use.
func tokenUsage(t *testing.T, s *testServer, key string) (used, most int64) {
	t.Helper()
	var est struct {
		InputTokens     int64 `json:"input_tokens"`
		MaxOutputTokens int64 `json:"max_output_tokens"`
	}
	_, _, body := rawCall(t, "POST", s.URL+"/api/v3/agents/run-agents/support_bot/estimate", key, nil, runBody)
	if err := json.Unmarshal(body, &est); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Usage struct {
			TotalTokens int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	status, _, body := rawCall(t, "POST", s.URL+runPath("support_bot"), key, nil, runBody)
	if err := json.Unmarshal(body, &res); err != nil || status != 200 {
		t.Fatalf("run: %d %s", status, body)
	}
	return res.Usage.TotalTokens, est.InputTokens + est.MaxOutputTokens
}

// TestRateLimitTokens: a run is admitted only if the most it may use (its prompt
// and its reply limit) fits the key's tokens of the minute, and then counts what
// it used: two runs fit a limit that two upper bounds would not.
func TestRateLimitTokens(t *testing.T) {
	s, clk, op := ratedServer(t, "")
	ctx := context.Background()
	k, err := op.CreateKey(ctx, client.KeySpec{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	used, most := tokenUsage(t, s, k.Secret) // no limit yet: nothing counted
	if used <= 0 || most <= used {
		t.Fatalf("a run used %d of at most %d tokens", used, most)
	}
	limit := used + most // one run settled and one in flight; two in flight would not fit
	if err := op.Do(ctx, "PATCH", "/api/v3/keys/"+k.ID, nil, map[string]any{"rate_limits": map[string]any{"tpm": limit}}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if status, _, body := rawCall(t, "POST", s.URL+runPath("support_bot"), k.Secret, nil, runBody); status != 200 {
			t.Fatalf("run %d: %d %s (the first must have been settled to %d tokens)", i+1, status, body, used)
		}
	}
	status, h, body := rawCall(t, "POST", s.URL+runPath("support_bot"), k.Secret, nil, runBody)
	m := wantRateLimited(t, h, body, "key_tpm", float64(limit), "60")
	if status != 429 || m["requested"] != float64(most) {
		t.Fatalf("third run: %d %s, want 429 asking for %d tokens", status, body, most)
	}
	// The first run leaves the window a minute after it was admitted.
	clk.Advance(time.Minute)
	if status, _, body := rawCall(t, "POST", s.URL+runPath("support_bot"), k.Secret, nil, runBody); status != 200 {
		t.Fatalf("a minute later: %d %s", status, body)
	}
	// A run that may use more than the limit never fits: no Retry-After.
	if err := op.Do(ctx, "PATCH", "/api/v3/keys/"+k.ID, nil, map[string]any{"rate_limits": map[string]any{"tpm": most - 1}}, nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	status, h, body = rawCall(t, "POST", s.URL+runPath("support_bot"), k.Secret, nil, runBody)
	if status != 429 || !strings.Contains(string(body), "max_tokens") {
		t.Fatalf("a run over the limit: %d %s", status, body)
	}
	wantRateLimited(t, h, body, "key_tpm", float64(most-1), "")

	// Embeddings count their input tokens the same way.
	long := strings.Repeat("word ", int(most))
	status, h, body = rawCall(t, "POST", s.URL+"/v1/embeddings", k.Secret, nil, `{"model": "offline-hash-embed", "input": "`+long+`"}`)
	if status != 429 || !strings.Contains(string(body), `"limit":"key_tpm"`) || h.Get("Retry-After") != "" {
		t.Errorf("embeddings over the limit: %d %v %s", status, h, body)
	}
	if status, _, body := rawCall(t, "POST", s.URL+"/v1/embeddings", k.Secret, nil, `{"model": "offline-hash-embed", "input": "a few words"}`); status != 200 {
		t.Errorf("embeddings within the limit: %d %s", status, body)
	}
}

// failingUpstream is an OpenAI-compatible server that refuses every request
// with a 400: a permanent failure, never retried.
func failingUpstream(t *testing.T) *httptest.Server {
	u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error": {"message": "no", "type": "invalid_request_error"}}`)
	}))
	t.Cleanup(u.Close)
	return u
}

// TestRateLimitRunsInFlight: a key's slot among the runs in flight is held by
// a stream while it streams, and given back when a run fails and when a
// stream's client goes away.
func TestRateLimitRunsInFlight(t *testing.T) {
	u := newSlowStream(t, []string{"one ", "two ", "three"}, 0).gated(t, 1)
	bad := failingUpstream(t)
	var handled tally
	s := startServerWith(t, fmt.Sprintf(`
providers:
  - {name: up, kind: openai, base_url: %s/v1, max_retries: 0}
  - {name: bad, kind: openai, base_url: %s/v1, max_retries: 0}
models:
  - {id: slow, provider: up, upstream_model: slow-model, context_window: 100000, max_output_tokens: 1000}
  - {id: broken, provider: bad, context_window: 100000, max_output_tokens: 1000}
limits:
  rate:
    key: {concurrent: 1}
`, u.URL, bad.URL), nil, handledHooks(&handled))
	op := s.client(s.Key)
	ctx := context.Background()
	for _, name := range []string{"slow", "broken"} {
		if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr(name), Description: client.Ptr("d"), Model: client.Ptr(name), MaxToken: client.Ptr(100)}); err != nil {
			t.Fatal(err)
		}
	}
	// A failed run gives its slot back: the next is not refused for the rate.
	for i := range 2 {
		if status, _, body := rawCall(t, "POST", s.URL+runPath("broken"), s.Key, nil, runBody); status != 400 {
			t.Fatalf("failing run %d: %d %s, want the upstream's 400", i+1, status, body)
		}
	}

	resp := postStream(t, s, "slow", "ping", "")
	defer resp.Body.Close()
	readEvents(resp, func(ev sseEvent) bool { return ev.Name == "delta" }) // the first piece; the rest waits
	status, h, body := rawCall(t, "POST", s.URL+runPath("slow"), s.Key, nil, runBody)
	if status != 429 {
		t.Fatalf("a run beside the stream: %d %s, want 429", status, body)
	}
	wantRateLimited(t, h, body, "key_concurrent", 1, "1")
	status, h, body = rawCall(t, "POST", s.URL+"/v1/chat/completions", s.Key, nil, `{"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": true}`)
	if status != 429 || h.Get("Retry-After") != "1" || !strings.Contains(string(body), `"limit":"key_concurrent"`) {
		t.Fatalf("a /v1 stream beside the stream: %d %v %s", status, h, body)
	}

	resp.Body.Close() // the client leaves mid-stream
	u.events.wait(t, "abandoned", 1)
	handled.wait(t, runPath("slow"), 2) // the refused run's handler and the stream's
	if status, _, body := rawCall(t, "POST", s.URL+runPath("slow"), s.Key, nil, runBody); status != 200 {
		t.Fatalf("after the stream's client left: %d %s", status, body)
	}
}

// TestRateLimitKeyOverrides: a key's own limits are set with PATCH
// /api/v3/keys/{id} rate_limits by a key above it, shown on the listing, and
// apply from the next request; null is the default again.
func TestRateLimitKeyOverrides(t *testing.T) {
	s, _, op := ratedServer(t, "limits:\n  rate:\n    key: {rpm: 2}\n")
	ctx := context.Background()
	mint := func(c *client.Client, spec client.KeySpec) *client.Key {
		t.Helper()
		k, err := c.CreateKey(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	admin := mint(op, client.KeySpec{Name: "admin", Scopes: []string{"admin"}})
	peer := mint(op, client.KeySpec{Name: "peer", Scopes: []string{"admin"}})
	app := mint(op, client.KeySpec{Name: "app"})
	if _, err := op.CreateOrg(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	foreign := mint(op, client.KeySpec{Name: "them", Scopes: []string{"admin"}, OrgID: "other"})
	ac := s.client(admin.Secret)

	var out struct {
		Data struct {
			ID         string `json:"id"`
			RateLimits struct {
				RPM        *float64 `json:"rpm"`
				TPM        *float64 `json:"tpm"`
				Concurrent *float64 `json:"concurrent"`
			} `json:"rate_limits"`
		} `json:"data"`
	}
	patch := func(c *client.Client, id string, body any) error {
		out.Data.RateLimits.RPM, out.Data.RateLimits.TPM, out.Data.RateLimits.Concurrent = nil, nil, nil
		return c.Do(ctx, "PATCH", "/api/v3/keys/"+id, nil, body, &out)
	}
	if err := patch(ac, app.ID, map[string]any{"rate_limits": map[string]any{"rpm": 1, "concurrent": 4}}); err != nil {
		t.Fatal(err)
	}
	if r := out.Data.RateLimits; r.RPM == nil || *r.RPM != 1 || r.TPM != nil || r.Concurrent == nil || *r.Concurrent != 4 {
		t.Errorf("PATCH answered %+v", r)
	}
	// The listing shows each key's own limits, null where the default applies.
	var list struct {
		Data []map[string]any `json:"data"`
	}
	if err := ac.Do(ctx, "GET", "/api/v3/keys", nil, nil, &list); err != nil {
		t.Fatal(err)
	}
	for _, k := range list.Data {
		want := map[string]any{"rpm": nil, "tpm": nil, "concurrent": nil}
		if k["id"] == app.ID {
			want = map[string]any{"rpm": 1.0, "tpm": nil, "concurrent": 4.0}
		}
		if got := fmt.Sprint(k["rate_limits"]); got != fmt.Sprint(want) {
			t.Errorf("key %v lists rate_limits %s, want %v", k["id"], got, want)
		}
	}
	// From the next request on: one run a minute.
	if status, _, body := rawCall(t, "POST", s.URL+runPath("support_bot"), app.Secret, nil, runBody); status != 200 {
		t.Fatalf("first run: %d %s", status, body)
	}
	status, h, body := rawCall(t, "POST", s.URL+runPath("support_bot"), app.Secret, nil, runBody)
	if status != 429 {
		t.Fatalf("second run: %d %s", status, body)
	}
	wantRateLimited(t, h, body, "key_rpm", 1, "60")

	// Who may: a key above the one it limits; another organization's key is 404.
	for _, tt := range []struct {
		name   string
		by     *client.Client
		target string
		want   int
	}{
		{"an admin lifts its own limits", ac, admin.ID, 403},
		{"an admin lifts a fellow admin's", ac, peer.ID, 403},
		{"an admin limits the operator", ac, mustKeyID(t, op), 403},
		{"a run key limits itself", s.client(app.Secret), app.ID, 403},
		{"another organization's admin", s.client(foreign.Secret), app.ID, 404},
		{"the operator limits an admin", op, admin.ID, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := patch(tt.by, tt.target, map[string]any{"rate_limits": map[string]any{"rpm": 0}})
			if got := statusOf(err); (tt.want == 200 && err != nil) || (tt.want != 200 && got != tt.want) {
				t.Fatalf("PATCH: %v, want %d", err, tt.want)
			}
		})
	}
	for _, bad := range []string{
		`{"rate_limits": {"rpm": -1}}`, `{"rate_limits": {"rpm": "many"}}`, `{"rate_limits": {"rpm": 1.5}}`,
		`{"rate_limits": {"rmp": 1}}`, `{"rate_limits": 5}`, `{"rate_limits": {"tpm": 1000000000001}}`,
	} {
		status, _, body := rawCall(t, "PATCH", s.URL+"/api/v3/keys/"+app.ID, admin.Secret, nil, bad)
		wantErrorBody(t, bad, status, body, 422, "invalid", "rate_limits")
	}
	// A budget change leaves the limits alone; null is the default again (rpm 2:
	// the key has one run in this minute, so one more).
	if err := patch(ac, app.ID, map[string]any{"budget": 5}); err != nil || out.Data.RateLimits.RPM == nil {
		t.Fatalf("budget PATCH: %v, limits %+v", err, out.Data.RateLimits)
	}
	if err := patch(ac, app.ID, map[string]any{"rate_limits": map[string]any{"rpm": nil}}); err != nil || out.Data.RateLimits.RPM != nil || out.Data.RateLimits.Concurrent == nil {
		t.Fatalf("rpm null: %v, limits %+v", err, out.Data.RateLimits)
	}
	if status, _, body := rawCall(t, "POST", s.URL+runPath("support_bot"), app.Secret, nil, runBody); status != 200 {
		t.Fatalf("with the default again: %d %s", status, body)
	}
	status, h, body = rawCall(t, "POST", s.URL+runPath("support_bot"), app.Secret, nil, runBody)
	wantRateLimited(t, h, body, "key_rpm", 2, "60")
	if err := patch(ac, app.ID, map[string]any{"rate_limits": nil}); err != nil || out.Data.RateLimits.Concurrent != nil {
		t.Fatalf("rate_limits null: %v, limits %+v", err, out.Data.RateLimits)
	}
}

// mustKeyID is the id of c's own key, from the keys listing (the bootstrap key
// is the only operator key there).
func mustKeyID(t *testing.T, c *client.Client) string {
	t.Helper()
	keys, err := c.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if len(k.Scopes) == 1 && k.Scopes[0] == "operator" {
			return k.ID
		}
	}
	t.Fatal("no operator key listed")
	return ""
}

// TestRateLimitsAcrossReplicas: three agentd processes on one PostgreSQL and one
// Redis admit exactly the key's requests per minute between them.
func TestRateLimitsAcrossReplicas(t *testing.T) {
	redis := os.Getenv("AGENTD_TEST_REDIS")
	if redis == "" {
		t.Skip("AGENTD_TEST_REDIS is not set: skipping the test of rate limits shared through Redis (set it to a server such as 127.0.0.1:6379)")
	}
	if !strings.Contains(redis, "://") {
		redis = "redis://" + redis
	}
	c := startCluster(t, 3, fmt.Sprintf("redis: %s\nlimits:\n  rate:\n    key: {rpm: 7}\n", redis))
	ops := c.clients(testKey)
	if _, err := ops[0].CreateAgent(context.Background(), supportBot()); err != nil {
		t.Fatal(err)
	}
	got := statuses(t, 45, func(i int) (int, http.Header, []byte, error) {
		return rawDo("POST", c.replicas[i%3].URL+runPath("support_bot"), testKey, nil, runBody)
	}, func(h http.Header, body []byte) {
		if h.Get("Retry-After") == "" || !strings.Contains(string(body), `"limit":"key_rpm"`) {
			t.Errorf("429 without Retry-After or limit: %v %s", h, body)
		}
	})
	if got[200] != 7 || got[429] != 38 {
		t.Fatalf("statuses across 3 replicas %v, want exactly 7 × 200 and 38 × 429", got)
	}
}
