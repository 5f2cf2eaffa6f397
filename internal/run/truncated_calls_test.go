package run

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/llmtest"
)

// cutCalls answers its first call with a tool call cut short by the reply
// limit (finish "length", arguments not JSON), and later calls with text,
// refusing, as Anthropic does, an assistant tool call whose arguments are not
// a JSON object.
type cutCalls struct {
	mu sync.Mutex
	n  int
}

func (c *cutCalls) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.n == 1 {
		return &llm.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city": "Par`}},
			FinishReason: llm.FinishLength, Usage: llm.Usage{InputTokens: 5, OutputTokens: 10, Source: llm.SourceProvider}}, nil
	}
	for _, m := range req.Messages {
		for _, tc := range m.ToolCalls {
			var v map[string]any
			if json.Unmarshal([]byte(tc.Arguments), &v) != nil {
				return nil, &llm.Error{Kind: llm.KindPermanent, StatusCode: 400, Message: "tool_use input is not an object"}
			}
		}
	}
	return &llm.Response{Text: "ok", FinishReason: llm.FinishStop, Usage: llm.Usage{InputTokens: 5, OutputTokens: 1, Source: llm.SourceProvider}}, nil
}

func (c *cutCalls) Stream(ctx context.Context, req *llm.Request, emit func(string) error) (*llm.Response, error) {
	return c.Complete(ctx, req)
}

// TestTruncatedToolCallDoesNotPoisonSession: a reply cut short by its limit in
// the middle of a tool call is returned, but its calls are not remembered as
// the session's open calls: the session's next prompt must not carry a call
// no provider takes, nor wait for results of a call the model never finished.
func TestTruncatedToolCallDoesNotPoisonSession(t *testing.T) {
	prov := &cutCalls{}
	f := newFixtureModels(t, &llmtest.Fake{}, 1_000_000, pricedModel("priced", prov))
	ctx := context.Background()
	res, err := f.runner.Run(ctx, &Request{Principal: f.p, AgentName: "bot", Message: "weather in Paris?", SessionID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ToolCalls) != 1 || res.FinishReason != llm.FinishLength {
		t.Fatalf("first run = %+v", res)
	}
	if _, err := f.runner.Run(ctx, &Request{Principal: f.p, AgentName: "bot", Message: "never mind, hello", SessionID: "s"}); err != nil {
		t.Errorf("the session's next run fails: %v", err)
	}
}
