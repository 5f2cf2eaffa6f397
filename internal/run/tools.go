package run

import (
	"fmt"
	"slices"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// requestFor is the model request of req on t, without its messages (the
// prompt, once built), model and limit (each attempt's): the agent's tools then
// the call's, the call's tool choice, and the call's response format or else
// the agent's.
func requestFor(req *Request, t *target, params []llm.Param) (*llm.Request, error) {
	base := &llm.Request{Messages: req.Messages, Temperature: t.temperature, ToolChoice: req.ToolChoice,
		ParallelToolCalls: req.ParallelToolCalls, ResponseFormat: req.ResponseFormat, Params: params}
	if base.ResponseFormat == nil {
		base.ResponseFormat = t.format
	}
	base.Tools = t.tools
	if len(req.Tools) > 0 {
		base.Tools = append(slices.Clip(t.tools), req.Tools...)
		for i, tool := range req.Tools {
			if slices.ContainsFunc(t.tools, func(a llm.Tool) bool { return a.Name == tool.Name }) {
				return nil, agentd.Invalid(fmt.Sprintf("tool %q is one of the agent's own tools: give yours another name", tool.Name),
					"value_error", "body", "tools", i, "function", "name")
			}
		}
	}
	if c := req.ToolChoice; c != nil {
		switch {
		case len(base.Tools) == 0 && (c.Mode == llm.ToolChoiceRequired || c.Mode == llm.ToolChoiceFunction):
			return nil, agentd.Invalid("tool_choice asks for a tool call, but the request and the agent have no tools", "value_error", "body", "tool_choice")
		case c.Mode == llm.ToolChoiceFunction && !slices.ContainsFunc(base.Tools, func(a llm.Tool) bool { return a.Name == c.Name }):
			return nil, agentd.Invalid(fmt.Sprintf("tool_choice names function %q, which is not one of the tools", c.Name), "value_error", "body", "tool_choice", "function", "name")
		}
	}
	return base, nil
}

// richMessages reports whether a message of msgs has more than text: content
// parts, tool calls or a tool result, which a provider may not take.
func richMessages(msgs []llm.Message) bool {
	return slices.ContainsFunc(msgs, func(m llm.Message) bool { return m.Parts != nil || m.ToolCalls != nil || m.Role == llm.RoleTool })
}

// checkToolOrder refuses a conversation a provider would refuse: a tool result
// that answers no call of the assistant message before it (the results of one
// message's calls follow it directly), and calls left unanswered before the
// conversation goes on. The caller's messages start at msgs[first] (errors
// name their index there); chat says whether they are a chat's messages.
func checkToolOrder(msgs []llm.Message, first int, chat bool) error {
	loc := func(i int, field ...any) []any {
		if !chat || i < first {
			return append([]any{"body", "message"}, field...)
		}
		return append([]any{"body", "messages", i - first}, field...)
	}
	var open []llm.ToolCall // the calls of the last assistant message not yet answered
	answering := false      // msgs[i-1] is that assistant message or one of its results
	for i := range msgs {
		m := &msgs[i]
		switch m.Role {
		case llm.RoleTool:
			j := slices.IndexFunc(open, func(c llm.ToolCall) bool { return c.ID == m.ToolCallID })
			if !answering || j < 0 {
				what := "the session's last turn or the assistant message before it"
				if !chat {
					what = "the session's last turn"
				}
				return agentd.Invalid(fmt.Sprintf("tool result for call %q answers no tool call of %s", m.ToolCallID, what),
					"value_error", loc(i, "tool_call_id")...)
			}
			open = slices.Delete(open, j, j+1)
			continue
		}
		if len(open) > 0 {
			return unanswered(open, loc(i, "role"))
		}
		answering = m.Role == llm.RoleAssistant && len(m.ToolCalls) > 0
		open = append(open[:0], m.ToolCalls...)
	}
	if len(open) > 0 {
		return unanswered(open, loc(len(msgs)-1, "tool_call_id"))
	}
	return nil
}

func unanswered(open []llm.ToolCall, loc []any) error {
	ids := make([]string, len(open))
	for k, c := range open {
		ids[k] = c.ID
	}
	return agentd.Invalid(fmt.Sprintf("tool calls %q have no result: answer each with a tool message right after the assistant message (or session turn) that made them", ids),
		"value_error", loc...)
}

// sessionMessages refuses, in a session, a chat's assistant message with tool
// calls: the session holds the conversation, and its turn stores only what
// came after the caller's last assistant message, so results answering calls
// it never made would leave a turn no provider takes in every later prompt.
func sessionMessages(msgs []llm.Message) error {
	for i := range msgs {
		if len(msgs[i].ToolCalls) > 0 {
			return agentd.Invalid("with X-Session-ID the session holds the conversation: send only the new messages "+
				"(the tool results answering the session's last turn, or a user message), not an assistant message with tool calls",
				"value_error", "body", "messages", i, "tool_calls")
		}
	}
	return nil
}

// nameCalls gives an id to each tool call the provider sent without one (the
// deprecated function_call form; some compatible servers): a result answers a
// call by id, so a call without one could never be answered and would leave
// its session stuck.
func nameCalls(resp *llm.Response, runID string) {
	name := func(calls []llm.ToolCall, choice int) {
		for i := range calls {
			if calls[i].ID == "" {
				calls[i].ID = fmt.Sprintf("call_%s_%d_%d", runID, choice, i)
			}
		}
	}
	name(resp.ToolCalls, 0)
	for i := range resp.More {
		name(resp.More[i].ToolCalls, i+1)
	}
}
