package bench

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Proxy is the bare JSON proxy every table is measured against: the least a
// gateway must do. For each request it decodes the JSON body into a map and
// encodes it again (a gateway must at least parse what it forwards), sends it to
// the same path on the upstream over pooled keep-alive connections, and copies
// the reply back, flushing each read of an event stream through at once.
type Proxy struct {
	upstream string // base URL, no trailing slash
	client   *http.Client
	bufs     sync.Pool // *bytes.Buffer
}

// NewProxy returns a proxy to the upstream at base URL upstream (scheme and
// host, e.g. http://127.0.0.1:8000) that keeps up to maxIdle idle connections to
// it (at least the expected concurrency; 1024 when ≤ 0).
func NewProxy(upstream string, maxIdle int) *Proxy {
	if maxIdle <= 0 {
		maxIdle = 1024
	}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        maxIdle,
		MaxIdleConnsPerHost: maxIdle,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	p := &Proxy{upstream: strings.TrimRight(upstream, "/"), client: &http.Client{Transport: tr}}
	p.bufs.New = func() any { return new(bytes.Buffer) }
	return p
}

// Close closes the proxy's idle upstream connections.
func (p *Proxy) Close() { p.client.CloseIdleConnections() }

// forwarded are the request headers the proxy passes on.
var forwarded = []string{"Authorization", "Content-Type", "Accept", "Openai-Organization", "Openai-Project"}

// ServeHTTP forwards one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = http.NoBody
	if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		in := p.bufs.Get().(*bytes.Buffer)
		defer p.putBuf(in)
		in.Reset()
		if _, err := in.ReadFrom(io.LimitReader(r.Body, 16<<20)); err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(in.Bytes(), &m); err != nil {
			writeOpenAIError(w, http.StatusBadRequest, "We could not parse the JSON body of your request.", "invalid_request_error", "")
			return
		}
		out := p.bufs.Get().(*bytes.Buffer)
		defer p.putBuf(out)
		out.Reset()
		if err := json.NewEncoder(out).Encode(m); err != nil {
			writeOpenAIError(w, http.StatusBadRequest, "The request body could not be encoded again.", "invalid_request_error", "")
			return
		}
		body = bytes.NewReader(out.Bytes())
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), body)
	if err != nil {
		writeOpenAIError(w, http.StatusBadGateway, "bad upstream request: "+err.Error(), "server_error", "")
		return
	}
	for _, k := range forwarded {
		if v := r.Header[k]; len(v) > 0 {
			req.Header[k] = v
		}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		if r.Context().Err() == nil {
			writeOpenAIError(w, http.StatusBadGateway, "upstream: "+err.Error(), "server_error", "")
		}
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		if k != "Connection" && k != "Keep-Alive" && k != "Transfer-Encoding" {
			h[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		buf := p.bufs.Get().(*bytes.Buffer)
		defer p.putBuf(buf)
		buf.Reset()
		buf.ReadFrom(resp.Body)
		w.Write(buf.Bytes())
		return
	}
	rc := http.NewResponseController(w)
	var chunk [4096]byte
	for {
		n, err := resp.Body.Read(chunk[:])
		if n > 0 {
			if _, werr := w.Write(chunk[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) putBuf(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 {
		p.bufs.Put(b)
	}
}
