package llm

// Chat accounting, after OpenAI's documented rule for chat models: each message costs
// its content plus a fixed overhead for the role and separators, and the reply is
// primed with a few more. Every part of agentd that counts a prompt (holds, trimming,
// the offline model's usage) uses this one rule so their numbers agree.
const (
	TokensPerMessage = 3
	TokensPerReply   = 3
	// TokensPerToolCall is the overhead of one tool call or tool definition
	// besides its text (name, id, arguments or schema).
	TokensPerToolCall = 8
	// ImageTokens is what one image is counted as before the provider reports:
	// more than OpenAI (at most 1,105 for a high-detail 2048×768 tile grid of
	// gpt-4o) or Anthropic (about 1,600 at 1.15 megapixels) charge for one, so a
	// hold stays an upper bound.
	ImageTokens = 2048
)

// CountMessages counts the tokens of msgs with count, a tokenizer's string counter.
func CountMessages(count func(string) int, msgs []Message) int {
	n := TokensPerReply
	for i := range msgs {
		n += CountMessage(count, &msgs[i])
	}
	return n
}

// CountMessage counts one message: its overhead, its text and images, its tool
// calls, and the call it answers.
func CountMessage(count func(string) int, m *Message) int {
	n := TokensPerMessage + count(m.Content)
	for _, p := range m.Parts {
		if p.Type == PartImage {
			n += ImageTokens
		} else {
			n += count(p.Text)
		}
	}
	for _, c := range m.ToolCalls {
		n += TokensPerToolCall + count(c.ID) + count(c.Name) + count(c.Arguments)
	}
	if m.ToolCallID != "" {
		n += count(m.ToolCallID)
	}
	return n
}

// CountTools counts the tokens the definitions of tools and a response format
// add to a prompt: providers send them to the model as text.
func CountTools(count func(string) int, tools []Tool, rf *ResponseFormat) int {
	n := 0
	for _, t := range tools {
		n += TokensPerToolCall + count(t.Name) + count(t.Description) + count(string(t.Parameters))
	}
	if rf != nil {
		n += TokensPerToolCall + count(rf.Name) + count(rf.Description) + count(string(rf.Schema))
	}
	return n
}
