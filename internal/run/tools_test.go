package run

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/prompt"
)

func TestCheckToolOrder(t *testing.T) {
	user := llm.Message{Role: llm.RoleUser, Content: "q"}
	calls := llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "a", Name: "f"}, {ID: "b", Name: "f"}}}
	res := func(id string) llm.Message { return llm.Message{Role: llm.RoleTool, ToolCallID: id, Content: "r"} }
	cases := []struct {
		name  string
		msgs  []llm.Message
		first int    // where the caller's messages start
		loc   string // "" when accepted
	}{
		{"plain", []llm.Message{user, {Role: llm.RoleAssistant, Content: "x"}, user}, 0, ""},
		{"both answered", []llm.Message{user, calls, res("b"), res("a")}, 0, ""},
		{"answered, then more", []llm.Message{user, calls, res("a"), res("b"), {Role: llm.RoleAssistant, Content: "x"}, user}, 0, ""},
		{"answering the session's turn", []llm.Message{user, calls, res("a"), res("b")}, 2, ""},
		{"a result for no call", []llm.Message{user, res("a")}, 0, "body.messages.1.tool_call_id"},
		{"a result for another call", []llm.Message{user, calls, res("a"), res("c")}, 0, "body.messages.3.tool_call_id"},
		{"a result answered twice", []llm.Message{user, calls, res("a"), res("a")}, 0, "body.messages.3.tool_call_id"},
		{"a result after a user message", []llm.Message{user, calls, res("a"), res("b"), user, res("a")}, 0, "body.messages.5.tool_call_id"},
		{"a call left unanswered", []llm.Message{user, calls, res("a"), user}, 0, "body.messages.3.role"},
		{"the last result missing", []llm.Message{user, calls, res("a")}, 0, "body.messages.2.tool_call_id"},
		{"the session's calls unanswered", []llm.Message{user, calls, user}, 2, "body.messages.0.role"},
	}
	for _, tc := range cases {
		err := checkToolOrder(tc.msgs, tc.first, true)
		if tc.loc == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var e *agentd.Error
		if !errors.As(err, &e) || e.Code != agentd.EInvalid || len(e.Violations) != 1 {
			t.Errorf("%s: err = %v, want one violation", tc.name, err)
			continue
		}
		var loc []string
		for _, p := range e.Violations[0].Loc {
			loc = append(loc, fmt.Sprint(p))
		}
		if got := strings.Join(loc, "."); got != tc.loc {
			t.Errorf("%s: refused at %s, want %s (%s)", tc.name, got, tc.loc, e.Violations[0].Msg)
		}
	}
}

func TestCallerTurn(t *testing.T) {
	count := func(s string) int { return len(strings.Fields(s)) }
	req := &Request{Messages: []llm.Message{
		{Role: llm.RoleSystem, Content: "be brief"},
		{Role: llm.RoleUser, Content: "old question"},
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "a", Name: "f", Arguments: "{}"}}},
		{Role: llm.RoleTool, ToolCallID: "a", Content: "sunny and warm"},
		{Role: llm.RoleUser, Parts: []llm.Part{{Type: llm.PartText, Text: "and this one"}, {Type: llm.PartImage, ImageURL: "https://x/y.png", Detail: "low"}}},
	}}
	got := callerTurn(req, count)
	want := agentd.Turn{User: "and this one", TurnTools: agentd.TurnTools{
		Results: []agentd.ToolResult{{CallID: "a", Content: "sunny and warm"}},
		Images:  []agentd.Image{{URL: "https://x/y.png", Detail: "low"}},
	}}
	// The result's text and id, the user's text and image: what the turn costs
	// beyond its messages' overhead.
	want.UserTokens = 3 + 1 + 3 + llm.ImageTokens
	if !reflect.DeepEqual(got, want) {
		t.Errorf("callerTurn = %+v\nwant %+v", got, want)
	}
	if got := callerTurn(&Request{Message: "hello there"}, count); got.User != "hello there" || got.UserTokens != 2 || !got.TurnTools.Empty() {
		t.Errorf("callerTurn of a message = %+v", got)
	}
}

// TestRequestHashPinsVersion: an Idempotency-Key reused for a run pinned to
// another version is another request, refused rather than replayed.
func TestRequestHashPinsVersion(t *testing.T) {
	base := Request{AgentName: "bot", SessionID: "s", Message: "hi"}
	pinned := base
	pinned.Version = 2
	other := base
	other.Version = 3
	if h := requestHash(&base); h == requestHash(&pinned) || requestHash(&pinned) == requestHash(&other) {
		t.Error("pinned versions share the unpinned request's hash")
	}
}

// TestCallerTurnKeepsResultsBeforeAssistant: in a session, tool results that
// answer the session's last turn are stored with the new turn even when the
// caller's messages go on with an assistant message; otherwise the session's
// calls stay unanswered and every later prompt is refused.
func TestCallerTurnKeepsResultsBeforeAssistant(t *testing.T) {
	count := func(s string) int { return len(strings.Fields(s)) }
	req := &Request{SessionID: "s", Messages: []llm.Message{
		{Role: llm.RoleTool, ToolCallID: "a", Content: "sunny"},
		{Role: llm.RoleAssistant, Content: "noted"},
		{Role: llm.RoleUser, Content: "next"},
	}}
	if err := sessionMessages(req.Messages); err != nil {
		t.Fatal(err)
	}
	got := callerTurn(req, count)
	if len(got.Results) != 1 || got.Results[0].CallID != "a" {
		t.Fatalf("callerTurn = %+v: the result answering the session's call is lost", got)
	}
	// The next prompt: the session's turn with the call, then this turn.
	prev := agentd.Turn{User: "weather?", Assistant: "", TurnTools: agentd.TurnTools{Calls: []agentd.ToolCall{{ID: "a", Name: "f", Arguments: "{}"}}}}
	got.Assistant = "it is sunny"
	var msgs []llm.Message
	for _, tu := range []agentd.Turn{prev, got} {
		tu := tu
		msgs = prompt.AppendTurn(msgs, &tu)
	}
	msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: "thanks"})
	if err := checkToolOrder(msgs, len(msgs)-1, true); err != nil {
		t.Errorf("the session's next prompt is refused: %v", err)
	}
}

// TestNameCalls: a call without an id gets one, unique in its run; ids the
// provider gave are kept.
func TestNameCalls(t *testing.T) {
	resp := &llm.Response{
		ToolCalls: []llm.ToolCall{{Name: "f"}, {ID: "call_kept", Name: "g"}, {Name: "h"}},
		More:      []llm.Choice{{ToolCalls: []llm.ToolCall{{Name: "f"}}}},
	}
	nameCalls(resp, "run-1")
	ids := map[string]bool{}
	for _, c := range append(resp.ToolCalls, resp.More[0].ToolCalls...) {
		if c.ID == "" || ids[c.ID] {
			t.Fatalf("ids %+v: empty or repeated", resp)
		}
		ids[c.ID] = true
	}
	if resp.ToolCalls[1].ID != "call_kept" {
		t.Errorf("the provider's id was replaced: %q", resp.ToolCalls[1].ID)
	}
}
