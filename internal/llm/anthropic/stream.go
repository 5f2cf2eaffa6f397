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
	Index        int      `json:"index"`         // content_block_*
	ContentBlock block    `json:"content_block"` // content_block_start
	Delta        delta    `json:"delta"`         // content_block_delta, message_delta
	Usage        *usage   `json:"usage"`         // message_delta
	Error        apiError `json:"error"`         // error
}

type delta struct {
	Type        string `json:"type"`         // content_block_delta: text_delta, input_json_delta, thinking_delta, …
	Text        string `json:"text"`         // text_delta
	PartialJSON string `json:"partial_json"` // input_json_delta
	StopReason  string `json:"stop_reason"`  // message_delta
}

// call is a tool_use block of a stream: its input arrives in pieces of JSON
// text, in order, in the deltas of its index.
type call struct {
	index    int
	id, name string
	start    json.RawMessage // content_block_start's input, {} when deltas follow
	args     []byte
}

// toolCalls assembles the calls of a stream, in block order. A call that got no
// input deltas has the input its start carried.
func toolCalls(calls []call) []llm.ToolCall {
	if len(calls) == 0 {
		return nil
	}
	out := make([]llm.ToolCall, len(calls))
	for i := range calls {
		c := &calls[i]
		args := string(c.args)
		if len(c.args) == 0 {
			args = compact(c.start)
		}
		out[i] = llm.ToolCall{ID: c.id, Name: c.name, Arguments: args}
	}
	return out
}

// Stream sends req with "stream": true and emits the reply's text as it arrives;
// tool calls are assembled and returned with the Response. With a response format
// the forced tool's input is the text, emitted as it arrives. The returned
// Response is never nil; see the package documentation for what it carries when
// the stream fails.
func (p *Provider) Stream(ctx context.Context, req *llm.Request, emit func(text string) error) (*llm.Response, error) {
	out := &llm.Response{}
	body, forced, err := p.encode(req, true)
	if err != nil {
		return out, err
	}
	resp, err := p.post(ctx, body)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := checkEventStream(resp); err != nil {
		return out, err
	}

	var (
		text       strings.Builder
		u          usage
		final      bool // message_delta brought the final counts
		seen       bool // any usage at all
		ev         event
		calls      []call
		structured = forced != ""
		answer     = -1 // with a response format, the index of the forced tool's block
	)
	r := sse.NewReader(resp.Body, 0)
	// fail returns what arrived before err: the text emitted and the calls so far,
	// the last one's arguments possibly cut short.
	fail := func(err error) (*llm.Response, error) {
		out.Text = text.String()
		out.ToolCalls = toolCalls(calls)
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
			switch b := &ev.ContentBlock; {
			case b.Type == "text" && !structured:
				piece = b.Text // empty in every documented stream
			case b.Type == "tool_use" && structured:
				if answer < 0 {
					answer = ev.Index
				}
			case b.Type == "tool_use":
				calls = append(calls, call{index: ev.Index, id: b.ID, name: b.Name, start: b.Input})
			}
		case "content_block_delta":
			switch ev.Delta.Type {
			case "text_delta":
				if !structured {
					piece = ev.Delta.Text
				}
			case "input_json_delta":
				if structured {
					if ev.Index == answer {
						piece = ev.Delta.PartialJSON
					}
				} else if c := callAt(calls, ev.Index); c != nil {
					c.args = append(c.args, ev.Delta.PartialJSON...)
				}
			}
		case "message_delta":
			if ev.Delta.StopReason != "" {
				out.FinishReason = finish(ev.Delta.StopReason, structured)
			}
			if ev.Usage != nil {
				u.merge(ev.Usage)
				seen, final = true, true
			}
		case "message_stop":
			out.Text = text.String()
			out.ToolCalls = toolCalls(calls)
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

// callAt is the call of block index, nil if that block is no tool call. Deltas
// go to the block last started, so the search from the end stops at once.
func callAt(calls []call, index int) *call {
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].index == index {
			return &calls[i]
		}
	}
	return nil
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
