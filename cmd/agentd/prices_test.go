package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/agentd/agentd/client"
)

// TestCachedTokenPrices: providers that report prompt-cache reads and writes and
// reasoning tokens are charged at each part's own price, and the charge, the
// response's usage, the ledger row, the rollups, the CSV and agentd check agree
// to the micro-credit.
//
// OpenAI-compatible: 1,000 prompt tokens of which 600 cached, 200 completion of
// which 150 reasoning, at 2 / 0.5 cached / 8 credits per million:
// 400×2 + 600×0.5 + 200×8 = 2,700 micro-credits. Anthropic: 100 input, 800 read
// from the cache, 100 written to it, 50 output, at 3 / 0.3 / 3.75 / 15:
// 300 + 240 + 375 + 750 = 1,665.
func TestCachedTokenPrices(t *testing.T) {
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY}
  - {name: claude, kind: anthropic, base_url: %[1]s, api_key_env: ANTHROPIC_KEY}
models:
  - {id: gpt-c, provider: compat, upstream_model: gpt-cached, context_window: 8192, max_output_tokens: 512, price: {input: 2, cached_input: 0.5, output: 8}}
  - {id: claude-c, provider: claude, upstream_model: claude-cached, context_window: 8192, max_output_tokens: 512, price: {input: 3, cached_input: 0.3, cache_write: 3.75, output: 15}}
`, u.URL)
	s, op := fundedServer(t, cfg, 10)
	ctx := context.Background()
	before, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("cached"), Description: client.Ptr("t"), Model: client.Ptr("claude-c"), MaxToken: client.Ptr(100)}); err != nil {
		t.Fatal(err)
	}

	// /v1: OpenAI's usage details.
	oc := newOpenAI(s, s.Key)
	res, err := oc.Chat.Completions.New(ctx, chatParams("gpt-c", openai.UserMessage("hi")))
	if err != nil {
		t.Fatal(err)
	}
	if us := res.Usage; us.PromptTokens != 1000 || us.CompletionTokens != 200 || us.PromptTokensDetails.CachedTokens != 600 ||
		us.CompletionTokensDetails.ReasoningTokens != 150 {
		t.Errorf("/v1 usage %s", res.Usage.RawJSON())
	}
	// The run endpoint: the parts as an extension of its usage.
	run, err := op.Run(ctx, "cached", "hi", "")
	if err != nil {
		t.Fatal(err)
	}
	if ru := run.Usage; ru.InputTokens != 1000 || ru.OutputTokens != 50 || ru.CachedInputTokens != 800 || ru.CacheWriteTokens != 100 {
		t.Errorf("run usage %+v", ru)
	}

	want := map[string]struct {
		cost                                float64
		in, out, cached, written, reasoning int
	}{
		"gpt-c":    {0.0027, 1000, 200, 600, 0, 150},
		"claude-c": {0.001665, 1000, 50, 800, 100, 0},
	}
	page, err := op.UsageRecords(ctx, client.UsageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 {
		t.Fatalf("%d ledger rows, want 2", len(page.Data))
	}
	var total float64
	for _, r := range page.Data {
		w := want[r.Model]
		if r.Cost != w.cost || r.InputTokens != w.in || r.OutputTokens != w.out || r.CachedInputTokens != w.cached ||
			r.CacheWriteTokens != w.written || r.ReasoningTokens != w.reasoning {
			t.Errorf("ledger row of %s: %+v, want %+v", r.Model, r, w)
		}
		total += r.Cost
	}
	after, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if drop := before.Balance - after.Balance; fmt.Sprintf("%.6f", drop) != "0.004365" || fmt.Sprintf("%.6f", total) != "0.004365" {
		t.Errorf("balance dropped by %.6f, the ledger sums to %.6f; want 0.004365 both", drop, total)
	}

	sum, err := op.UsageSummary(ctx, "model", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range sum.Data {
		w := want[g.Group]
		if g.Cost != w.cost || g.CachedInputTokens != int64(w.cached) || g.CacheWriteTokens != int64(w.written) || g.ReasoningTokens != int64(w.reasoning) {
			t.Errorf("rollup of %s: %+v, want %+v", g.Group, g, w)
		}
	}
	totals, err := op.Usage(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var cached, written, reasoning int64
	for _, m := range totals.Models {
		cached, written, reasoning = cached+m.CachedInputTokens, written+m.CacheWriteTokens, reasoning+m.ReasoningTokens
	}
	if cached != 1400 || written != 100 || reasoning != 150 {
		t.Errorf("totals by model: cached %d, written %d, reasoning %d; want 1400, 100, 150", cached, written, reasoning)
	}

	var buf bytes.Buffer
	if err := op.UsageCSV(ctx, client.UsageFilter{}, &buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows[1:] {
		w := want[row[10]]
		if got := strings.Join([]string{row[15], row[19], row[20], row[21]}, " "); got != fmt.Sprintf("%.6f %d %d %d", w.cost, w.cached, w.written, w.reasoning) {
			t.Errorf("CSV of %s: cost, cached, written, reasoning = %s", row[10], got)
		}
	}

	var out, errOut strings.Builder
	if err := run2check(s, &out, &errOut); err != nil || !strings.Contains(out.String(), "is consistent") {
		t.Errorf("agentd check: %v\n%s%s", err, out.String(), errOut.String())
	}
}

// run2check runs agentd check on s's database.
func run2check(s *testServer, out, errOut *strings.Builder) error {
	return run(context.Background(), []string{"check", "--db", "sqlite:" + s.dbPath}, func(string) string { return "" }, nil, out, errOut)
}
