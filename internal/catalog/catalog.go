// Package catalog is the set of models agents may use: each model's provider,
// limits, prices and tokenizer. It is built once at start from the configuration.
package catalog

import (
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// Model is one catalog entry.
type Model struct {
	ID              string
	Name            string
	ProviderName    string
	ProviderKind    string // openai, anthropic, offline
	Provider        llm.Provider
	UpstreamModel   string
	ContextWindow   int
	MaxOutputTokens int
	Price           agentd.Price
	// Count counts tokens the way this model does (exactly where the tokenizer is
	// known, an upper-bound estimate otherwise). Tokenizer names it.
	Count     func(string) int
	Tokenizer string
	// Fallbacks are tried in order when this model fails with a retryable error.
	Fallbacks []*Model
	// Timeout bounds one attempt on the provider; MaxRetries is how many times a
	// retryable failure is retried on it before falling back.
	Timeout    time.Duration
	MaxRetries int
	// Embedding marks a model for embeddings only (config type embedding): its
	// provider is an llm.Embedder, and chat calls refuse it.
	Embedding bool

	chain []*Model // computed by New
}

// Chain returns the models a request for m may be answered by, in the order they
// are tried: m, then its fallbacks depth first, each model once. The configuration
// refuses cycles, and the seen set makes a cycle harmless anyway.
func (m *Model) Chain() []*Model {
	if m.chain != nil {
		return m.chain
	}
	return m.walkChain()
}

func (m *Model) walkChain() []*Model {
	chain := []*Model{m}
	seen := map[*Model]bool{m: true}
	var walk func(*Model)
	walk = func(x *Model) {
		for _, f := range x.Fallbacks {
			if !seen[f] {
				seen[f] = true
				chain = append(chain, f)
				walk(f)
			}
		}
	}
	walk(m)
	return chain
}

// Catalog maps model ids to models. Its models may be replaced as a whole while
// it serves (a configuration reload): a caller that got a model keeps it, and
// its provider, for as long as it holds it.
type Catalog struct {
	cur atomic.Pointer[entries]
}

type entries struct {
	byID  map[string]*Model
	order []*Model
}

// New returns a catalog of models, listed in the given order.
func New(models ...*Model) *Catalog {
	c := &Catalog{}
	c.Replace(models...)
	return c
}

// Replace makes models the catalog's, at once: a lookup sees the old set or the
// new one, never a mix.
func (c *Catalog) Replace(models ...*Model) {
	e := &entries{byID: make(map[string]*Model, len(models))}
	for _, m := range models {
		e.byID[m.ID] = m
		e.order = append(e.order, m)
	}
	for _, m := range models {
		m.chain = m.walkChain()
	}
	c.cur.Store(e)
}

// Model returns the model with id, or EModelUnavailable.
func (c *Catalog) Model(id string) (*Model, error) {
	if m, ok := c.cur.Load().byID[id]; ok {
		return m, nil
	}
	return nil, &agentd.Error{Code: agentd.EModelUnavailable, Message: "model " + quote(id) + " not available; see GET /api/v3/models/base"}
}

// Models lists every model in catalog order.
func (c *Catalog) Models() []*Model { return c.cur.Load().order }

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return `"` + s + `"`
}
