package llm

// Chat accounting, after OpenAI's documented rule for chat models: each message costs
// its content plus a fixed overhead for the role and separators, and the reply is
// primed with a few more. Every part of agentd that counts a prompt (holds, trimming,
// the offline model's usage) uses this one rule so their numbers agree.
const (
	TokensPerMessage = 3
	TokensPerReply   = 3
)

// CountMessages counts the tokens of msgs with count, a tokenizer's string counter.
func CountMessages(count func(string) int, msgs []Message) int {
	n := TokensPerReply
	for _, m := range msgs {
		n += TokensPerMessage + count(m.Content)
	}
	return n
}
