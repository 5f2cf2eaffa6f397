package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// Orgs returns a page of every organization (operator keys only), in name order,
// with balance, held and available credits, and the cursor of the next page (""
// after the last). cursor is "" for the first page; limit is 1–200, or 0 for the
// server's default (50).
func (c *Client) Orgs(ctx context.Context, cursor string, limit int) ([]*Org, string, error) {
	var out struct {
		Data       []*Org  `json:"data"`
		NextCursor *string `json:"next_cursor"`
	}
	if err := c.Do(ctx, http.MethodGet, sessionPagePath("/api/v3/admin/orgs", cursor, limit), nil, nil, &out); err != nil {
		return nil, "", err
	}
	return out.Data, deref(out.NextCursor), nil
}

// CreditGrant is one credit grant (or, negative, correction) of an organization.
type CreditGrant struct {
	ID        string  `json:"id"`
	Amount    float64 `json:"amount"` // credits
	CreatedAt string  `json:"created_at"`
	KeyID     string  `json:"key_id"`   // the key that made it
	KeyName   *string `json:"key_name"` // nil when that key no longer exists
}

// CreditHistory returns a page of org's (id or name) credit grants, the newest
// first (operator keys only), and the cursor of the next page ("" after the
// last). cursor and limit are as for Orgs.
func (c *Client) CreditHistory(ctx context.Context, org, cursor string, limit int) ([]*CreditGrant, string, error) {
	var out struct {
		Data       []*CreditGrant `json:"data"`
		NextCursor *string        `json:"next_cursor"`
	}
	path := "/api/v3/admin/orgs/" + url.PathEscape(org) + "/credits"
	if err := c.Do(ctx, http.MethodGet, sessionPagePath(path, cursor, limit), nil, nil, &out); err != nil {
		return nil, "", err
	}
	return out.Data, deref(out.NextCursor), nil
}

// OrgKeys lists the keys of org (id or name; operator keys only), or of the
// caller's organization when org is "".
func (c *Client) OrgKeys(ctx context.Context, org string) ([]*Key, error) {
	path := "/api/v3/keys"
	if org != "" {
		path += "?" + url.Values{"org_id": {org}}.Encode()
	}
	var out struct{ Data []*Key }
	err := c.Do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Data, err
}

// KeyUpdate changes a key's budget. Budget nil leaves the limit as it is, unless
// RemoveBudget; BudgetPeriod "" leaves the period as it is.
type KeyUpdate struct {
	Budget       *float64 // credits per period
	RemoveBudget bool     // the key spends from its organization without a limit of its own
	BudgetPeriod string   // none, daily or monthly
}

// UpdateKey changes the budget of the key id and returns the key.
func (c *Client) UpdateKey(ctx context.Context, id string, u KeyUpdate) (*Key, error) {
	body := map[string]any{}
	switch {
	case u.RemoveBudget:
		body["budget"] = json.RawMessage("null")
	case u.Budget != nil:
		body["budget"] = *u.Budget
	}
	if u.BudgetPeriod != "" {
		body["budget_period"] = u.BudgetPeriod
	}
	var out struct{ Data *Key }
	err := c.Do(ctx, http.MethodPatch, "/api/v3/keys/"+url.PathEscape(id), nil, body, &out)
	return out.Data, err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
