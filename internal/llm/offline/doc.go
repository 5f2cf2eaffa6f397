// Package offline is agentd's built-in offline model: a deterministic responder, not
// an LLM. It answers a message with the output of the agent's demonstration whose
// input is lexically closest to it, and says plainly when no demonstration is close
// enough. It needs no network, no weights and no configuration, so a fresh agentd
// can run agents end to end, and tests get exact, repeatable answers and usage.
//
// It imports only the standard library and internal/llm; the tokenizer is passed in
// through Options so that usage is counted with the same rule as the rest of agentd.
package offline
