// Package llm is the provider-neutral contract between a run and a model: messages
// in, text and usage out. Adapters (offline, openai, anthropic) implement Provider;
// optional capabilities are separate interfaces found by type assertion, in the
// manner of database/sql/driver. It imports no other agentd package.
package llm

import (
	"context"
	"errors"
	"fmt"
)

// Roles of a message.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one chat message.
type Message struct {
	Role    string
	Content string
	// Example marks the messages of a few-shot demonstration. Remote providers send
	// them as ordinary turns; the offline model answers from them.
	Example bool
}

// Request is one completion request. Model is the upstream model name.
type Request struct {
	Model       string
	Messages    []Message
	Temperature float64
	MaxTokens   int
}

// Usage is what a provider reports (or, with Source "estimated", what we counted).
type Usage struct {
	InputTokens  int
	OutputTokens int
	Source       string // "provider" or "estimated"
}

// Response is a finished completion.
type Response struct {
	Text         string
	FinishReason string // "stop" or "length"
	Usage        Usage
	Model        string // the model that answered, as the provider names it
}

// Provider completes chat requests. Implementations must be safe for concurrent use
// and must return an *Error (possibly wrapped) for failures they can classify.
type Provider interface {
	Complete(ctx context.Context, req *Request) (*Response, error)
}

// Kind classifies a provider failure for retry decisions.
type Kind int

// Kinds of provider failure.
const (
	KindUnknown   Kind = iota
	KindRetryable      // 429, 5xx, timeouts, connection resets
	KindPermanent      // 400, 401, 403, 404, context too long
)

// Error is a provider failure. Message may contain upstream text: it is for logs,
// not for clients.
type Error struct {
	Kind       Kind
	StatusCode int // upstream HTTP status, 0 if none
	Message    string
	Err        error
}

func (e *Error) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("llm: upstream status %d: %s", e.StatusCode, e.Message)
	}
	return "llm: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether err is worth retrying on the same or another model.
func Retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == KindRetryable
}
