package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/llm/sse"
)

// event is any event of a stream; which fields are set depends on Type.
type event struct {
	Type         string   `json:"type"`
	Message      message  `json:"message"`       // message_start
	ContentBlock block    `json:"content_block"` // content_block_start
	Delta        delta    `json:"delta"`         // content_block_delta, message_delta
	Usage        *usage   `json:"usage"`         // message_delta
	Error        apiError `json:"error"`         // error
}

type delta struct {
	Type       string `json:"type"`        // content_block_delta: text_delta, thinking_delta, …
	Text       string `json:"text"`        // text_delta
	StopReason string `json:"stop_reason"` // message_delta
}

// Stream sends req with "stream": true and emits the reply's text as it arrives.
// The returned Response is never nil; see the package documentation for the usage
// it carries when the stream fails.
func (p *Provider) Stream(ctx context.Context, req *llm.Request, emit func(text string) error) (*llm.Response, error) {
	out := &llm.Response{}
	resp, err := p.post(ctx, req, true)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := checkEventStream(resp); err != nil {
		return out, err
	}

	var (
		text  strings.Builder
		u     usage
		final bool // message_delta brought the final counts
		seen  bool // any usage at all
		ev    event
	)
	r := sse.NewReader(resp.Body, 0)
	fail := func(err error) (*llm.Response, error) {
		out.Text = text.String()
		if final {
			out.Usage = u.llmUsage()
		}
		return out, err
	}
	for {
		e, err := r.Next()
		if err != nil {
			switch {
			case errors.Is(err, sse.ErrLineTooLong):
				return fail(&llm.Error{Kind: llm.KindPermanent, Message: "anthropic: stream event too large", Err: err})
			case err == io.EOF:
				return fail(llm.TransportError(ctx, "anthropic: stream ended before message_stop", io.ErrUnexpectedEOF))
			}
			return fail(llm.TransportError(ctx, "anthropic: read the stream", err))
		}
		ev = event{}
		if err := json.Unmarshal(e.Data, &ev); err != nil {
			return fail(malformed(err))
		}
		typ := ev.Type
		if typ == "" {
			typ = e.Type // the data should name its type; the event line is a fallback
		}
		piece := ""
		switch typ {
		case "message_start":
			out.Model = ev.Message.Model
			if ev.Message.Usage != nil {
				u.merge(ev.Message.Usage)
				seen = true
			}
		case "content_block_start":
			if ev.ContentBlock.Type == "text" {
				piece = ev.ContentBlock.Text // empty in every documented stream
			}
		case "content_block_delta":
			if ev.Delta.Type == "text_delta" {
				piece = ev.Delta.Text
			}
		case "message_delta":
			if ev.Delta.StopReason != "" {
				out.FinishReason = finish(ev.Delta.StopReason)
			}
			if ev.Usage != nil {
				u.merge(ev.Usage)
				seen, final = true, true
			}
		case "message_stop":
			out.Text = text.String()
			if seen {
				out.Usage = u.llmUsage()
			}
			if out.FinishReason == "" {
				out.FinishReason = llm.FinishOther
			}
			// Anthropic ends the reply right after message_stop; reading its end lets
			// an HTTP/1.1 connection be reused.
			io.CopyN(io.Discard, resp.Body, 512)
			return out, nil
		case "error":
			return fail(ev.Error.llmError(0, nil))
		}
		// ping, content_block_stop and event types Anthropic may add are ignored.
		if piece != "" {
			text.WriteString(piece)
			if err := emit(piece); err != nil {
				return fail(err)
			}
		}
	}
}

// checkEventStream fails a successful reply that is not an event stream: a proxy
// that ignored "stream": true, or answered for someone else.
func checkEventStream(resp *http.Response) error {
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	if mt, _, _ := strings.Cut(ct, ";"); strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxSnippet))
	return &llm.Error{Kind: llm.KindPermanent,
		Message: fmt.Sprintf("anthropic: stream reply has Content-Type %q, want text/event-stream: %s", ct, snippet(body))}
}
