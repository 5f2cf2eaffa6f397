package llmtest

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/llm"
)

// Fake is a scriptable provider for tests of the code that calls providers. Each
// call takes the next entry of Errs (nil entries succeed); when Errs is used up,
// calls succeed with Reply. It counts calls and remembers the last request.
type Fake struct {
	Reply string
	// Usage, when set, is reported; otherwise the fake reports no usage (Source "").
	Usage *llm.Usage
	Model string
	Errs  []error
	// Delay is how long each call takes (honouring cancellation).
	Delay time.Duration
	// Pieces, when set, is what Stream emits; otherwise Reply split after spaces.
	Pieces []string
	// FailAfter, when > 0, makes Stream fail with FailErr after emitting that
	// many pieces.
	FailAfter int
	FailErr   error

	mu    sync.Mutex
	calls int
	last  *llm.Request
}

// Calls returns how many calls were made.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Last returns the last request.
func (f *Fake) Last() *llm.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *Fake) begin(ctx context.Context, req *llm.Request) error {
	f.mu.Lock()
	n := f.calls
	f.calls++
	f.last = req
	f.mu.Unlock()
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n < len(f.Errs) {
		return f.Errs[n]
	}
	return nil
}

func (f *Fake) response(text string) *llm.Response {
	r := &llm.Response{Text: text, FinishReason: llm.FinishStop, Model: f.Model}
	if f.Usage != nil {
		r.Usage = *f.Usage
	}
	return r
}

// Complete implements llm.Provider.
func (f *Fake) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	if err := f.begin(ctx, req); err != nil {
		return nil, err
	}
	return f.response(f.Reply), nil
}

// Stream implements llm.Provider.
func (f *Fake) Stream(ctx context.Context, req *llm.Request, emit func(string) error) (*llm.Response, error) {
	if err := f.begin(ctx, req); err != nil {
		return &llm.Response{}, err
	}
	pieces := f.Pieces
	if pieces == nil {
		pieces = strings.SplitAfter(f.Reply, " ")
	}
	var sent strings.Builder
	for i, p := range pieces {
		if f.FailAfter > 0 && i == f.FailAfter {
			return &llm.Response{Text: sent.String()}, f.FailErr
		}
		if err := emit(p); err != nil {
			sent.WriteString(p)
			return &llm.Response{Text: sent.String()}, err
		}
		sent.WriteString(p)
	}
	return f.response(sent.String()), nil
}
