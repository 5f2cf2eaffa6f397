// Package prompt assembles the messages of one run within the model's context window:
// the agent version's instructions and demonstrations (never trimmed), then as many
// of the session's newest turns as fit, then the user's message. It counts with the
// same rule as llm.CountMessages, so the number it returns is the input-token count
// that holds and estimated usage rely on.
package prompt
