package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/agentd/agentd/internal/llm"
)

var _ llm.Embedder = (*Provider)(nil)

// embedReply is an embeddings reply: a list of vectors with their index, and the
// usage.
type embedReply struct {
	Model string      `json:"model"`
	Data  []embedding `json:"data"`
	Usage *struct {
		PromptTokens int `json:"prompt_tokens"`
	} `json:"usage"`
}

type embedding struct {
	Index     int       `json:"index"`
	Embedding []float32 `json:"embedding"`
}

// Embed implements llm.Embedder with POST {base}/embeddings, asking for floats
// (the caller's encoding is agentd's to make) and passing the client's other
// parameters as sent.
func (p *Provider) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	var b bytes.Buffer
	b.WriteString(`{"model":`)
	model, _ := json.Marshal(req.Model)
	b.Write(model)
	input, _ := json.Marshal(req.Input)
	b.WriteString(`,"input":`)
	b.Write(input)
	b.WriteString(`,"encoding_format":"float"`)
	for _, prm := range req.Params {
		name, _ := json.Marshal(prm.Name)
		b.WriteByte(',')
		b.Write(name)
		b.WriteByte(':')
		b.Write(prm.Value)
	}
	b.WriteByte('}')
	url := strings.TrimSuffix(p.endpoint, "/chat/completions") + "/embeddings"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b.Bytes()))
	if err != nil {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: build request: " + err.Error(), Err: err}
	}
	hreq.Header = p.header.Clone()
	resp, err := p.client.Do(hreq)
	if err != nil {
		return nil, llm.TransportError(ctx, "openai: send request", err)
	}
	if !ok(resp.StatusCode) {
		return nil, statusError(resp)
	}
	defer closeBody(resp.Body)
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, llm.TransportError(ctx, "openai: read reply", err)
	}
	if len(body) > maxReply {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: reply larger than 16 MiB"}
	}
	var r embedReply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: "openai: malformed embeddings reply: " + err.Error() + ": " + snippet(body), Err: err}
	}
	slices.SortFunc(r.Data, func(a, b embedding) int { return a.Index - b.Index })
	if len(r.Data) != len(req.Input) {
		return nil, &llm.Error{Kind: llm.KindPermanent, Message: fmt.Sprintf("openai: %d vectors for %d inputs", len(r.Data), len(req.Input))}
	}
	out := &llm.EmbedResponse{Model: r.Model, Vectors: make([][]float32, len(r.Data))}
	for i, d := range r.Data {
		if d.Index != i || len(d.Embedding) == 0 {
			return nil, &llm.Error{Kind: llm.KindPermanent, Message: fmt.Sprintf("openai: embeddings reply has no vector %d", i)}
		}
		out.Vectors[i] = d.Embedding
	}
	if r.Usage != nil {
		out.InputTokens, out.Source = r.Usage.PromptTokens, llm.SourceProvider
	}
	return out, nil
}
