// Package catalog is the set of models agents may use: each model's provider,
// limits, prices and tokenizer. It is built once at start from the configuration.
package catalog

import (
	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

// Model is one catalog entry.
type Model struct {
	ID              string
	Name            string
	ProviderName    string
	Provider        llm.Provider
	UpstreamModel   string
	ContextWindow   int
	MaxOutputTokens int
	Price           agentd.Price
	// Count counts tokens the way this model does (exactly where the tokenizer is
	// known, an upper-bound estimate otherwise).
	Count func(string) int
}

// Catalog maps model ids to models.
type Catalog struct {
	byID  map[string]*Model
	order []*Model
}

// New returns a catalog of models, listed in the given order.
func New(models ...*Model) *Catalog {
	c := &Catalog{byID: make(map[string]*Model, len(models))}
	for _, m := range models {
		c.byID[m.ID] = m
		c.order = append(c.order, m)
	}
	return c
}

// Model returns the model with id, or EModelUnavailable.
func (c *Catalog) Model(id string) (*Model, error) {
	if m, ok := c.byID[id]; ok {
		return m, nil
	}
	return nil, &agentd.Error{Code: agentd.EModelUnavailable, Message: "model " + quote(id) + " not available; see GET /api/v3/models/base"}
}

// Models lists every model in catalog order.
func (c *Catalog) Models() []*Model { return c.order }

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return `"` + s + `"`
}
