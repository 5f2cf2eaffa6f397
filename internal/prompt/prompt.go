package prompt

import (
	"errors"
	"fmt"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// Fixed is the part of a prompt that never changes for an agent version: system
// instructions and demonstrations, already counted. Build it once per version with
// Compile and cache it; Build only copies it.
type Fixed struct {
	Messages []llm.Message
	// Tokens is the sum of llm.TokensPerMessage plus the content's count over Messages.
	Tokens int
}

// Compile lays out an agent version's fixed messages: a system message with the
// instructions (none when they are empty), then each demonstration as a user message
// and an assistant message, both marked Example. count is the model's tokenizer.
func Compile(instructions string, demos []agentd.Demonstration, count func(string) int) *Fixed {
	f := &Fixed{Messages: make([]llm.Message, 0, 1+2*len(demos))}
	add := func(role, content string, example bool) {
		f.Messages = append(f.Messages, llm.Message{Role: role, Content: content, Example: example})
		f.Tokens += llm.TokensPerMessage + count(content)
	}
	if instructions != "" {
		add(llm.RoleSystem, instructions, false)
	}
	for _, d := range demos {
		add(llm.RoleUser, d.Input, true)
		add(llm.RoleAssistant, d.Output, true)
	}
	return f
}

// Input is everything Build needs. Token counts must come from the model's tokenizer.
type Input struct {
	Fixed         *Fixed        // nil means no instructions and no demonstrations
	History       []agentd.Turn // oldest first
	Message       string
	MessageTokens int // count(Message)
	// Tail, when set, replaces Message: the caller's own messages of a chat
	// request, sent after the history. TailTokens is their Σ TokensPerMessage +
	// count(content).
	Tail       []llm.Message
	TailTokens int
	// Definitions is what the tool definitions and response format sent with
	// the messages cost (llm.CountTools).
	Definitions   int
	ContextWindow int // the model's context window, in tokens
	MaxTokens     int // reserved for the reply
}

// Result is a prompt ready to send.
type Result struct {
	Messages []llm.Message
	// InputTokens is llm.CountMessages of Messages with the tokenizer that produced
	// the counts in the Input.
	InputTokens int
	// TrimmedTurns is how many of the oldest history turns were left out.
	TrimmedTurns int
}

// Build assembles a prompt from in: the fixed messages, then the newest whole history
// turns that fit in ContextWindow − MaxTokens, in chronological order, then the
// message. Older turns go first because the newest ones matter most to the reply;
// turns are never split, and a turn that does not fit ends the history even if an
// older, smaller one would, so that the model sees no gap in the conversation.
//
// If the fixed messages and the message alone do not fit, Build returns an
// *agentd.Error with code agentd.EInvalid, saying how many tokens were needed and how
// many the model allows, also as the fields required_tokens and available_tokens.
// A non-positive ContextWindow or a negative MaxTokens is the caller's mistake and
// yields an ordinary error.
func Build(in Input) (*Result, error) {
	if in.ContextWindow <= 0 || in.MaxTokens < 0 {
		return nil, errors.New("prompt.Build: context window must be positive and max tokens non-negative")
	}
	var fixed []llm.Message
	fixedTokens := 0
	if in.Fixed != nil {
		fixed, fixedTokens = in.Fixed.Messages, in.Fixed.Tokens
	}
	budget := in.ContextWindow - in.MaxTokens
	used := fixedTokens + in.TailCost() + llm.TokensPerReply
	if used > budget {
		return nil, &agentd.Error{
			Code: agentd.EInvalid,
			Message: fmt.Sprintf("prompt does not fit: instructions, demonstrations and message need %d tokens; "+
				"the model allows %d minus %d reserved for the reply", used, in.ContextWindow, in.MaxTokens),
			Fields: map[string]any{
				"required_tokens":  used,
				"available_tokens": max(budget, 0),
			},
		}
	}

	// Walk back from the newest turn while whole turns fit.
	first := len(in.History)
	for first > 0 {
		t := in.History[first-1]
		cost := TurnCost(&t)
		if cost > budget-used {
			break
		}
		used += cost
		first--
	}
	// A turn that answers tool calls goes with the turn that made them.
	for first < len(in.History) && in.History[first].Continues() {
		used -= TurnCost(&in.History[first])
		first++
	}
	if first == len(in.History) && len(in.Tail) > 0 && in.Tail[0].Role == llm.RoleTool && len(in.History) > 0 {
		// The caller's tool results answer the newest turn's calls, which do not fit.
		return nil, &agentd.Error{
			Code: agentd.EInvalid,
			Message: fmt.Sprintf("prompt does not fit: the tool results answer calls of the session's last turn, which with the "+
				"instructions and demonstrations needs %d tokens; the model allows %d minus %d reserved for the reply",
				used+TurnCost(&in.History[len(in.History)-1]), in.ContextWindow, in.MaxTokens),
			Fields: map[string]any{
				"required_tokens":  used + TurnCost(&in.History[len(in.History)-1]),
				"available_tokens": max(budget, 0),
			},
		}
	}
	kept := in.History[first:]

	msgs := make([]llm.Message, 0, len(fixed)+2*len(kept)+max(1, len(in.Tail)))
	msgs = append(msgs, fixed...)
	for i := range kept {
		msgs = AppendTurn(msgs, &kept[i])
	}
	if in.Tail != nil {
		msgs = append(msgs, in.Tail...)
	} else {
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: in.Message})
	}
	return &Result{Messages: msgs, InputTokens: used, TrimmedTurns: first}, nil
}

// TailCost returns what the messages after the history cost: the Tail's count
// when set, else the one message's, and the definitions sent with them. The history gets what the window has left.
func (in *Input) TailCost() int {
	if in.Tail != nil {
		return in.TailTokens + in.Definitions
	}
	return llm.TokensPerMessage + in.MessageTokens + in.Definitions
}

// TurnCost is what a history turn costs in a prompt: its messages' overhead and
// the counts cached with it. A plain turn is two messages; a turn of a tool
// conversation counts one more per tool result (its UserTokens cover their text).
func TurnCost(t *agentd.Turn) int {
	return (2+len(t.Results))*llm.TokensPerMessage + t.UserTokens + t.AssistantTokens
}

// AppendTurn appends the messages of turn t to msgs: the tool results it opens
// with, the user's message (none when a turn is only results), and the
// assistant's reply with its tool calls.
func AppendTurn(msgs []llm.Message, t *agentd.Turn) []llm.Message {
	if t.TurnTools.Empty() {
		return append(msgs,
			llm.Message{Role: llm.RoleUser, Content: t.User},
			llm.Message{Role: llm.RoleAssistant, Content: t.Assistant})
	}
	for _, r := range t.Results {
		msgs = append(msgs, llm.Message{Role: llm.RoleTool, ToolCallID: r.CallID, Content: r.Content})
	}
	if len(t.Images) > 0 {
		parts := make([]llm.Part, 0, 1+len(t.Images))
		if t.User != "" {
			parts = append(parts, llm.Part{Type: llm.PartText, Text: t.User})
		}
		for _, im := range t.Images {
			parts = append(parts, llm.Part{Type: llm.PartImage, ImageURL: im.URL, Detail: im.Detail})
		}
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Parts: parts})
	} else if t.User != "" || len(t.Results) == 0 {
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: t.User})
	}
	a := llm.Message{Role: llm.RoleAssistant, Content: t.Assistant}
	for _, c := range t.Calls {
		a.ToolCalls = append(a.ToolCalls, llm.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
	}
	return append(msgs, a)
}
