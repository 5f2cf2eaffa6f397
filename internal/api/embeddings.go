package api

// Embeddings — POST /v1/embeddings and NuGen's POST /api/v3/inference/embeddings —
// on catalog models of type embedding, metered like runs (a hold, one ledger row,
// input tokens at the input price).

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/run"
)

// maxEmbedInputs bounds the inputs of one call, as OpenAI does.
const maxEmbedInputs = 2048

type embeddingsRequest struct {
	Model          *string         `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat *string         `json:"encoding_format"`
}

// embeddingsHandled are the fields agentd takes; the rest (dimensions, user, …)
// go to the model.
var embeddingsHandled = map[string]bool{"model": true, "input": true, "encoding_format": true}

// embeddingInput is a call's input: a string or a list of strings, none empty.
func embeddingInput(raw json.RawMessage) ([]string, error) {
	if !given(raw) {
		return nil, agentd.Invalid("Field required", "missing", "body", "input")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		raw, _ = json.Marshal([]string{one})
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, agentd.Invalid("Input should be a string or a list of strings", "string_type", "body", "input")
	}
	switch {
	case len(list) == 0:
		return nil, agentd.Invalid("List should have at least 1 item", "too_short", "body", "input")
	case len(list) > maxEmbedInputs:
		return nil, agentd.Invalid("List should have at most 2048 items", "too_long", "body", "input")
	}
	in := make([]string, len(list))
	for i, item := range list {
		if json.Unmarshal(item, &in[i]) != nil {
			return nil, unsupported("token-id inputs are not supported: send text", "input", i)
		}
		if in[i] == "" {
			return nil, agentd.Invalid("String should have at least 1 character", "string_too_short", "body", "input", i)
		}
	}
	return in, nil
}

type embeddingList struct {
	Object  string           `json:"object"`
	ID      string           `json:"id"`
	Created int64            `json:"created"`
	Data    []embeddingEntry `json:"data"`
	Model   string           `json:"model"`
	Usage   struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
	Agentd chatExtension `json:"agentd"`
}

type embeddingEntry struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

// embeddings is POST /v1/embeddings.
func (s *Server) embeddings(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	data, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var body embeddingsRequest
	if err := decodeJSON(data, &body); err != nil {
		return err
	}
	if body.Model == nil || *body.Model == "" {
		return agentd.Invalid("Field required", "missing", "body", "model")
	}
	input, err := embeddingInput(body.Input)
	if err != nil {
		return err
	}
	b64 := false
	if f := body.EncodingFormat; f != nil {
		switch *f {
		case "float":
		case "base64":
			b64 = true
		default:
			return agentd.Invalid("Input should be 'float' or 'base64'", "literal_error", "body", "encoding_format")
		}
	}
	params, err := bodyParams(data, embeddingsHandled)
	if err != nil {
		return err
	}
	if _, err := s.Catalog.Model(*body.Model); err != nil {
		return modelNotFound(*body.Model)
	}
	res, err := s.Runner.Embed(r.Context(), &run.EmbedRequest{Principal: p, Model: *body.Model, Input: input, Params: params})
	if err != nil {
		return err
	}
	out := embeddingList{Object: "list", ID: "emb-" + res.RunID, Created: s.Clock.Now().Unix(), Model: *body.Model,
		Data: make([]embeddingEntry, len(res.Vectors)), Agentd: chatExtension{RunID: res.RunID, Model: res.Model, UsageSource: res.Usage.Source}}
	for i, v := range res.Vectors {
		out.Data[i] = embeddingEntry{Object: "embedding", Index: i, Embedding: v}
		if b64 {
			out.Data[i].Embedding = float32Base64(v)
		}
	}
	out.Usage.PromptTokens, out.Usage.TotalTokens = res.Usage.InputTokens, res.Usage.InputTokens
	return writeJSON(w, http.StatusOK, &out)
}

// float32Base64 is OpenAI's base64 encoding of a vector: little-endian float32s.
func float32Base64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}
