package offline

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"unicode"

	"github.com/agentd/agentd/internal/llm"
)

// MinScore is the lowest similarity at which a demonstration answers a message.
// Below it, the offline model says that nothing matches rather than return an
// unrelated demonstration's output. Texts are compared after rewording is
// undone (match.go: case, punctuation, stop words, plural and -ing/-ed forms), so
// "reset my password" and "How do I reset a password?" are the same text; at 0.3
// a rephrasing that shares the key words matches ("reset my password" and "reset
// the password of my account" score 0.82), while two four- or five-word texts
// that share one content word (0.22) do not. The measure is lexical only: it
// knows no synonyms or paraphrase, and short texts that share words can match.
const MinScore = 0.3

// Options configures a Model. Both functions are required and must be safe for
// concurrent use.
type Options struct {
	// Count returns the number of tokens in a string.
	Count func(string) int
	// Truncate returns the longest prefix of s that counts at most n tokens.
	Truncate func(s string, n int) string
}

// Model is the offline model. It holds no state between calls and is safe for
// concurrent use.
type Model struct {
	count    func(string) int
	truncate func(string, int) string
}

var _ llm.Provider = (*Model)(nil)

// New returns an offline model. It panics if a required option is missing: that is
// a wiring mistake, found the first time the program starts.
func New(opts Options) *Model {
	if opts.Count == nil || opts.Truncate == nil {
		panic("offline.New: Options.Count and Options.Truncate are required")
	}
	return &Model{count: opts.Count, truncate: opts.Truncate}
}

// Complete answers the last message of req, which must be a user message, from the
// demonstrations in req.Messages (the user/assistant pairs marked Example). It fails
// with a KindPermanent *llm.Error when there is no user message to answer, and with a
// KindRetryable one when ctx is already done. Usage is exact: input tokens are
// llm.CountMessages of the request and output tokens the count of the reply.
func (m *Model) Complete(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, &llm.Error{Kind: llm.KindRetryable, Message: "offline: " + err.Error(), Err: err}
	}
	if req == nil || len(req.Messages) == 0 {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "offline: request has no messages"}
	}
	last := req.Messages[len(req.Messages)-1]
	if last.Role != llm.RoleUser {
		return nil, &llm.Error{Kind: llm.KindPermanent,
			Message: fmt.Sprintf("offline: last message has role %q, want %q", last.Role, llm.RoleUser)}
	}

	reply := answer(req.Messages[:len(req.Messages)-1], last.Text())
	finish := "stop"
	if req.MaxTokens > 0 && m.count(reply) > req.MaxTokens {
		reply = m.truncate(reply, req.MaxTokens)
		finish = "length"
	}
	return &llm.Response{
		Text:         reply,
		FinishReason: finish,
		Usage: llm.Usage{
			InputTokens:  llm.CountMessages(m.count, req.Messages),
			OutputTokens: m.count(reply),
			Source:       "provider", // the offline model is the provider, and its counts are exact
		},
		Model: req.Model,
	}, nil
}

// Stream is Complete delivered a word at a time (each piece is a word with the
// spaces after it), so streaming clients see the same text arrive in order.
func (m *Model) Stream(ctx context.Context, req *llm.Request, emit func(string) error) (*llm.Response, error) {
	resp, err := m.Complete(ctx, req)
	if err != nil {
		return &llm.Response{Model: req.Model}, err
	}
	full := resp.Text
	sent := 0
	for sent < len(full) {
		if err := ctx.Err(); err != nil {
			return partial(resp, full[:sent], m.count), &llm.Error{Kind: llm.KindRetryable, Message: "offline: " + err.Error(), Err: err}
		}
		n := pieceLen(full[sent:])
		if err := emit(full[sent : sent+n]); err != nil {
			return partial(resp, full[:sent+n], m.count), err
		}
		sent += n
	}
	return resp, nil
}

// pieceLen is the length of s's first word and the whitespace after it.
func pieceLen(s string) int {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return len(s)
	}
	j := strings.IndexFunc(s[i:], func(r rune) bool { return !unicode.IsSpace(r) })
	if j < 0 {
		return len(s)
	}
	return i + j
}

// partial is resp cut to the text delivered so far, with usage for that text.
func partial(resp *llm.Response, text string, count func(string) int) *llm.Response {
	p := *resp
	p.Text = text
	p.FinishReason = ""
	p.Usage.OutputTokens = count(text)
	return &p
}

// answer returns the reply to message given the messages before it.
func answer(earlier []llm.Message, message string) string {
	want := newText(message)
	best, bestScore, bestExact, demos, turns := "", 0.0, false, 0, 0
	for i, msg := range earlier {
		if msg.Role != llm.RoleUser {
			continue
		}
		if !msg.Example {
			turns++
			continue
		}
		// A demonstration is an example user message answered by an example
		// assistant message; an unanswered one has no output to give.
		if i+1 >= len(earlier) || earlier[i+1].Role != llm.RoleAssistant || !earlier[i+1].Example {
			continue
		}
		demos++
		score, exact := similarity(want, newText(msg.Content))
		// Strictly better only, so that ties go to the earliest demonstration.
		if (exact && !bestExact) || (exact == bestExact && score > bestScore) {
			best, bestScore, bestExact = earlier[i+1].Content, score, exact
		}
	}
	if bestExact || bestScore >= MinScore {
		return best
	}
	lead := "No demonstration of this agent matches your message."
	if demos == 0 {
		lead = "This agent has no demonstrations to answer from."
	}
	return fmt.Sprintf("%s (agentd offline model: it answers only from the agent's demonstrations; this conversation has %d earlier %s.)",
		lead, turns, plural(turns, "turn", "turns"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// text is a string normalized for comparison: its words (maximal runs of letters
// and digits, lowercased, then without stop words and stemmed: match.go) in
// order, and the same words sorted for counting.
type text struct {
	raw    string
	words  []string
	sorted []string
}

func newText(s string) text {
	words := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	words = contentWords(words) // match.go: stop words dropped, words stemmed
	return text{raw: s, words: words, sorted: slices.Sorted(slices.Values(words))}
}

// similarity returns the cosine similarity of the word-count vectors of a and b, in
// [0, 1], and whether they are the same text after normalization (same words in the
// same order, ignoring case, punctuation and spacing). An exact match scores 1 and
// outranks texts that merely use the same words in the same proportions. Texts
// without words match only when their trimmed, lowercased forms are equal.
func similarity(a, b text) (score float64, exact bool) {
	if len(a.words) == 0 || len(b.words) == 0 {
		exact = len(a.words) == 0 && len(b.words) == 0 &&
			strings.EqualFold(strings.TrimSpace(a.raw), strings.TrimSpace(b.raw))
		if exact {
			return 1, true
		}
		return 0, false
	}
	if slices.Equal(a.words, b.words) {
		return 1, true
	}
	dot, na, nb := 0, squaredNorm(a.sorted), squaredNorm(b.sorted)
	for i, j := 0, 0; i < len(a.sorted) && j < len(b.sorted); {
		switch w := a.sorted[i]; {
		case w < b.sorted[j]:
			i++
		case w > b.sorted[j]:
			j++
		default:
			ca, cb := run(a.sorted[i:]), run(b.sorted[j:])
			dot += ca * cb
			i, j = i+ca, j+cb
		}
	}
	if dot*dot == na*nb { // proportional counts: exactly 1, without rounding error
		return 1, false
	}
	return float64(dot) / math.Sqrt(float64(na)*float64(nb)), false
}

// run returns how many times words[0] repeats at the start of the sorted words.
func run(words []string) int {
	n := 1
	for n < len(words) && words[n] == words[0] {
		n++
	}
	return n
}

// squaredNorm returns the sum of the squared counts of the sorted words.
func squaredNorm(sorted []string) int {
	n := 0
	for i := 0; i < len(sorted); {
		c := run(sorted[i:])
		n += c * c
		i += c
	}
	return n
}

var _ llm.ParamChecker = (*Model)(nil)

// CheckRequest implements llm.ParamChecker. The offline model is deterministic:
// sampling parameters (seed, top_p, penalties, logit_bias, stop, …) and labels
// (user, metadata, store, service_tier) change nothing in its answer, so they are
// taken; what it cannot give — log probabilities, JSON on demand, tool calls, a
// look at an image — is refused. Tool calls and results already in the
// conversation are taken: it answers the last user message.
func (m *Model) CheckRequest(req *llm.Request) error {
	if len(req.Tools) > 0 && (req.ToolChoice == nil || req.ToolChoice.Mode != llm.ToolChoiceNone) {
		return &llm.ParamError{Param: "tools", Kind: "offline", Reason: "the offline model answers from demonstrations and cannot call tools"}
	}
	if req.ResponseFormat != nil {
		return &llm.ParamError{Param: "response_format", Kind: "offline", Reason: "the offline model answers from demonstrations and cannot promise JSON"}
	}
	if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == llm.RoleTool {
		return &llm.ParamError{Param: "messages", Kind: "offline", Reason: "the offline model answers a user message, not a tool result"}
	}
	for i := range req.Messages {
		for _, p := range req.Messages[i].Parts {
			if p.Type == llm.PartImage {
				return &llm.ParamError{Param: "messages", Kind: "offline", Reason: "the offline model cannot see images"}
			}
		}
	}
	for _, p := range req.Params {
		switch v := string(p.Value); {
		case p.Name == "logprobs" && v != "false", p.Name == "top_logprobs" && v != "0":
			return &llm.ParamError{Param: p.Name, Kind: "offline", Reason: "the offline model has no log probabilities to return"}
		case p.Name == "n" && v != "1":
			return &llm.ParamError{Param: p.Name, Kind: "offline", Reason: "the offline model gives one answer"}
		}
	}
	return nil
}

var _ llm.Embedder = (*Model)(nil)

// EmbedDimensions is the length of the offline model's vectors unless the
// request asks for fewer or more ("dimensions", 1 to 4096).
const EmbedDimensions = 256

// Embed implements llm.Embedder with a deterministic hashed embedding, not a
// learned one: each lower-cased word adds ±1 to the coordinate its FNV-1a hash
// names, and the vector is scaled to unit length, so equal texts get equal
// vectors and texts sharing words point the same way. Input tokens are counted
// with the model's tokenizer.
func (m *Model) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, &llm.Error{Kind: llm.KindRetryable, Message: "offline: " + err.Error(), Err: err}
	}
	dims := EmbedDimensions
	for _, p := range req.Params {
		if p.Name == "dimensions" {
			if err := json.Unmarshal(p.Value, &dims); err != nil || dims < 1 || dims > 4096 {
				return nil, &llm.Error{Kind: llm.KindPermanent, StatusCode: 400, Message: "offline: dimensions must be an integer from 1 to 4096"}
			}
		}
	}
	out := &llm.EmbedResponse{Model: req.Model, Source: llm.SourceProvider, Vectors: make([][]float32, len(req.Input))}
	for i, text := range req.Input {
		out.InputTokens += m.count(text)
		v := make([]float64, dims)
		for _, w := range strings.Fields(strings.ToLower(text)) {
			h := fnv.New64a()
			h.Write([]byte(w))
			x := h.Sum64()
			sign := 1.0
			if x&1 == 1 {
				sign = -1
			}
			v[(x>>1)%uint64(dims)] += sign
		}
		var norm float64
		for _, c := range v {
			norm += c * c
		}
		vec := make([]float32, dims)
		if norm > 0 {
			norm = math.Sqrt(norm)
			for j, c := range v {
				vec[j] = float32(c / norm)
			}
		}
		out.Vectors[i] = vec
	}
	return out, nil
}
