package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/agentd/agentd/client"
)

// TestEmbeddings: embeddings with the official SDK, on an OpenAI-compatible
// upstream (vectors, usage, parameters passed on, base64) and on the offline
// model (deterministic, unit length, dimensions); each call is one ledger row
// charged for its input tokens; chat and embedding models are not interchangeable.
func TestEmbeddings(t *testing.T) {
	u := newUpstream(t, nil)
	cfg := fmt.Sprintf(`
providers:
  - {name: compat, kind: openai, base_url: %[1]s/v1, api_key_env: UPSTREAM_KEY}
models:
  - {id: embed-3, type: embedding, provider: compat, upstream_model: text-embedding-3-small, context_window: 8191, price: {input: 20}}
  - {id: gpt-test, provider: compat, upstream_model: gpt-chat, context_window: 8192, max_output_tokens: 512}
`, u.URL)
	s, op := fundedServer(t, cfg, 10)
	ctx := context.Background()
	oc := newOpenAI(s, s.Key)
	before, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}

	res, err := oc.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed-3", Dimensions: openai.Int(3),
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a cat", "a dog"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Data) != 2 || fmt.Sprint(res.Data[0].Embedding, res.Data[1].Embedding) != "[1 0.5 -0.25] [2 0.5 -0.25]" ||
		res.Usage.PromptTokens != 14 || res.Model != "embed-3" {
		t.Errorf("embeddings %s", res.RawJSON())
	}
	u.mu.Lock()
	body := u.bodies["text-embedding-3-small"][0]
	u.mu.Unlock()
	if fmt.Sprintf("%v %v %v", body["input"], body["dimensions"], body["encoding_format"]) != "[a cat a dog] 3 float" {
		t.Errorf("upstream got %v", body)
	}

	// base64, as the Python SDK asks by default: little-endian float32s.
	status, _, raw := rawCall(t, "POST", s.URL+"/api/v3/inference/embeddings", s.Key, nil, `{"model":"embed-3","input":"x","encoding_format":"base64"}`)
	var list struct{ Data []struct{ Embedding string } }
	if err := json.Unmarshal(raw, &list); status != 200 || err != nil || len(list.Data) != 1 {
		t.Fatalf("base64 embeddings: %d %s", status, raw)
	}
	b64 := list.Data[0].Embedding
	bytes, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(bytes) != 12 || math.Float32frombits(binary.LittleEndian.Uint32(bytes)) != 1 || math.Float32frombits(binary.LittleEndian.Uint32(bytes[8:])) != -0.25 {
		t.Errorf("base64 vector %q (%v)", b64, err)
	}

	// The offline model: the same text, the same unit vector; dimensions honoured.
	off := func(text string, dims int64) []float64 {
		t.Helper()
		p := openai.EmbeddingNewParams{Model: "offline-hash-embed", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(text)}}
		if dims > 0 {
			p.Dimensions = openai.Int(dims)
		}
		r, err := oc.Embeddings.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return r.Data[0].Embedding
	}
	a, b, c := off("The quick brown fox", 0), off("the QUICK brown fox", 0), off("a slow green turtle", 0)
	var norm, same, other float64
	for i := range a {
		norm += a[i] * a[i]
		same += a[i] * b[i]
		other += a[i] * c[i]
	}
	if len(a) != 256 || math.Abs(norm-1) > 1e-6 || math.Abs(same-1) > 1e-6 || other > 0.5 {
		t.Errorf("offline: %d dims, norm %v, same text %v, other text %v", len(a), norm, same, other)
	}
	if d := off("x y", 16); len(d) != 16 {
		t.Errorf("offline dimensions 16: %d", len(d))
	}

	// One ledger row per call, charged for the provider's input tokens.
	page, err := op.UsageRecords(ctx, client.UsageFilter{Model: "embed-3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || page.Data[0].InputTokens != 14 || page.Data[0].OutputTokens != 0 || page.Data[0].Cost != 0.00028 || page.Data[1].Cost != 0.00014 {
		t.Errorf("ledger %+v", page.Data)
	}
	after, err := op.Billing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := fmt.Sprintf("%.6f", before.Balance-after.Balance); d != "0.000420" || after.Held != 0 {
		t.Errorf("balance dropped %s, held %v; want 0.000420 and 0", d, after.Held)
	}

	// Not interchangeable, and bad inputs are named.
	for _, tc := range []struct{ path, body, param string }{
		{"/v1/embeddings", `{"model":"gpt-test","input":"x"}`, "model"},
		{"/v1/chat/completions", `{"model":"embed-3","messages":[{"role":"user","content":"x"}]}`, "model"},
		{"/v1/embeddings", `{"model":"embed-3","input":[]}`, "input"},
		{"/v1/embeddings", `{"model":"embed-3","input":[""]}`, "input.[0]"},
		{"/v1/embeddings", `{"model":"embed-3","input":[[1,2]]}`, "input.[0]"},
		{"/v1/embeddings", `{"model":"embed-3"}`, "input"},
		{"/v1/embeddings", `{"model":"embed-3","input":"x","encoding_format":"hex"}`, "encoding_format"},
	} {
		status, _, raw := rawCall(t, "POST", s.URL+tc.path, s.Key, nil, tc.body)
		if status != 400 || !strings.Contains(string(raw), `"param":"`+tc.param+`"`) {
			t.Errorf("%s %s: %d %s, want 400 naming %s", tc.path, tc.body, status, raw, tc.param)
		}
	}
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("embedder"), Description: client.Ptr("t"), Model: client.Ptr("embed-3"), MaxToken: client.Ptr(5)}); statusOf(err) != 422 {
		t.Errorf("an agent on an embedding model: %v, want 422", err)
	}
}
