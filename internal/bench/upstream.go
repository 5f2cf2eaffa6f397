package bench

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// UpstreamOptions shape the built-in upstream's answers.
type UpstreamOptions struct {
	// Model is the model id the replies and GET /v1/models name (default gpt-4o-mini).
	Model string
	// Latency is how long a request waits before the first byte of its reply.
	Latency time.Duration
	// Tokens is the reply's length in pieces (stream chunks; one word each; default 16).
	Tokens int
	// StreamInterval is the pause between two pieces of a stream.
	StreamInterval time.Duration
	// ErrorRate is the fraction of completions answered 500 with OpenAI's error body.
	ErrorRate float64
	// ResetRate is the fraction of completions whose connection is reset with no reply.
	ResetRate float64
	// PromptTokens is the usage's prompt_tokens (default 24): the upstream does not
	// read prompts.
	PromptTokens int
}

// Upstream is an OpenAI-compatible chat-completions server that answers every
// request with the same precomputed reply, in OpenAI's wire format: POST
// /v1/chat/completions (a chat.completion, or chat.completion.chunk events ending
// in data: [DONE], with a usage chunk when stream_options.include_usage is set)
// and GET /v1/models. It shares the machine with what it measures, so it is
// cheap: it reads a request body only to find "stream": true and
// "include_usage": true, decoding JSON only when a byte search cannot tell.
type Upstream struct {
	opt UpstreamOptions

	completion []byte   // the whole chat.completion
	first      []byte   // stream: the role chunk
	pieces     [][]byte // stream: one event per piece
	finish     []byte   // stream: finish_reason stop
	usage      []byte   // stream: the usage chunk (include_usage)
	models     []byte   // GET /v1/models

	bufs sync.Pool // *bytes.Buffer for request bodies

	// pause waits d for a request (Latency, StreamInterval), false when its
	// client leaves first; draw is a random number in [0, 1) (ErrorRate,
	// ResetRate). NewUpstream sets them to sleepCtx and rand.Float64; a test may
	// set its own before serving.
	pause func(r *http.Request, d time.Duration) bool
	draw  func() float64
}

// upstreamID and upstreamCreated are fixed: the replies are precomputed.
const (
	upstreamID          = "chatcmpl-agentdbench0000000000000000"
	upstreamCreated     = 1735689600 // 2025-01-01T00:00:00Z
	upstreamFingerprint = "fp_agentdbench"
	// upstreamObfuscation stands for the random padding OpenAI adds to every
	// chunk (stream_options.include_obfuscation, on by default).
	upstreamObfuscation = "aQ3x"
)

// serverErrorBody is OpenAI's body of a 500.
var serverErrorBody = []byte(`{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}` + "\n")

// benchWords are the pieces of every reply, cycled.
var benchWords = []string{"The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."}

// NewUpstream precomputes the replies of an upstream with options o.
func NewUpstream(o UpstreamOptions) *Upstream {
	if o.Model == "" {
		o.Model = "gpt-4o-mini"
	}
	if o.Tokens <= 0 {
		o.Tokens = 16
	}
	if o.PromptTokens <= 0 {
		o.PromptTokens = 24
	}
	u := &Upstream{opt: o, pause: sleepCtx, draw: rand.Float64}
	u.bufs.New = func() any { return new(bytes.Buffer) }
	model, _ := json.Marshal(o.Model)
	var text bytes.Buffer
	for i := range o.Tokens {
		text.WriteString(benchWords[i%len(benchWords)])
	}
	content, _ := json.Marshal(text.String())
	usage := `{"prompt_tokens":` + strconv.Itoa(o.PromptTokens) + `,"completion_tokens":` + strconv.Itoa(o.Tokens) +
		`,"total_tokens":` + strconv.Itoa(o.PromptTokens+o.Tokens) +
		`,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`
	head := `{"id":"` + upstreamID + `","object":"chat.completion","created":` + strconv.Itoa(upstreamCreated) + `,"model":` + string(model)
	u.completion = []byte(head + `,"choices":[{"index":0,"message":{"role":"assistant","content":` + string(content) +
		`,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":` + usage +
		`,"service_tier":"default","system_fingerprint":"` + upstreamFingerprint + `"}` + "\n")

	chunk := func(choices, usage string) []byte {
		return []byte(`data: {"id":"` + upstreamID + `","object":"chat.completion.chunk","created":` + strconv.Itoa(upstreamCreated) +
			`,"model":` + string(model) + `,"service_tier":"default","system_fingerprint":"` + upstreamFingerprint +
			`","choices":` + choices + `,"usage":` + usage + `,"obfuscation":"` + upstreamObfuscation + `"}` + "\n\n")
	}
	u.first = chunk(`[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`, "null")
	for i := range o.Tokens {
		piece, _ := json.Marshal(benchWords[i%len(benchWords)])
		u.pieces = append(u.pieces, chunk(`[{"index":0,"delta":{"content":`+string(piece)+`},"logprobs":null,"finish_reason":null}]`, "null"))
	}
	u.finish = chunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, "null")
	u.usage = chunk(`[]`, usage)
	u.models = []byte(`{"object":"list","data":[{"id":` + string(model) + `,"object":"model","created":` + strconv.Itoa(upstreamCreated) + `,"owned_by":"agentd-bench"}]}` + "\n")
	return u
}

// Model is the model id the upstream answers as.
func (u *Upstream) Model() string { return u.opt.Model }

// ServeHTTP answers /v1/chat/completions and /v1/models.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		u.complete(w, r)
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		h := w.Header()
		h["Content-Type"] = jsonType
		h["Content-Length"] = []string{strconv.Itoa(len(u.models))}
		w.Write(u.models)
	default:
		writeOpenAIError(w, http.StatusNotFound, "Unknown request URL: "+r.Method+" "+r.URL.Path+".", "invalid_request_error", "unknown_url")
	}
}

var (
	jsonType  = []string{"application/json"}
	eventType = []string{"text/event-stream; charset=utf-8"}
)

func (u *Upstream) complete(w http.ResponseWriter, r *http.Request) {
	buf := u.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			u.bufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, 16<<20)); err != nil {
		return // the client is gone
	}
	stream, includeUsage, ok := streamFlags(buf.Bytes())
	if !ok {
		writeOpenAIError(w, http.StatusBadRequest, "We could not parse the JSON body of your request.", "invalid_request_error", "")
		return
	}

	if p := u.opt.ResetRate; p > 0 && u.draw() < p {
		reset(w)
		return
	}
	if d := u.opt.Latency; d > 0 && !u.pause(r, d) {
		return
	}
	if p := u.opt.ErrorRate; p > 0 && u.draw() < p {
		h := w.Header()
		h["Content-Type"] = jsonType
		h["Content-Length"] = []string{strconv.Itoa(len(serverErrorBody))}
		w.WriteHeader(http.StatusInternalServerError)
		w.Write(serverErrorBody)
		return
	}
	h := w.Header()
	if !stream {
		h["Content-Type"] = jsonType
		h["Content-Length"] = []string{strconv.Itoa(len(u.completion))}
		w.Write(u.completion)
		return
	}
	h["Content-Type"] = eventType
	h["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	send := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(u.first) {
		return
	}
	for i, p := range u.pieces {
		if i > 0 && u.opt.StreamInterval > 0 && !u.pause(r, u.opt.StreamInterval) {
			return
		}
		if !send(p) {
			return
		}
	}
	w.Write(u.finish)
	if includeUsage {
		w.Write(u.usage)
	}
	w.Write(doneEvent)
}

var doneEvent = []byte("data: [DONE]\n\n")

// streamFlags finds "stream": true and "stream_options": {"include_usage": true}
// in a request body. The byte searches settle the common spellings; only a body
// that names them in another way (spaces, false) is decoded. ok is false when
// that decode fails.
func streamFlags(body []byte) (stream, includeUsage, ok bool) {
	if !bytes.Contains(body, []byte(`"stream"`)) {
		return false, false, true
	}
	stream = bytes.Contains(body, []byte(`"stream":true`))
	includeUsage = bytes.Contains(body, []byte(`"include_usage":true`))
	if stream && (includeUsage || !bytes.Contains(body, []byte(`"include_usage"`))) {
		return stream, includeUsage, true
	}
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return false, false, false
	}
	return req.Stream, req.StreamOptions.IncludeUsage, true
}

// sleepCtx waits d, or until the client leaves (then false).
func sleepCtx(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// reset closes the request's connection with a TCP reset and no reply.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2 or a wrapped writer: abort the stream instead
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// writeOpenAIError writes OpenAI's error body.
func writeOpenAIError(w http.ResponseWriter, status int, msg, typ, code string) {
	body := map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}}
	if code != "" {
		body["error"].(map[string]any)["code"] = code
	}
	b, _ := json.Marshal(body)
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
