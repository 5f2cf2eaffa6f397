package api

import (
	"net/http"

	"github.com/agentd/agentd"
)

// Page sizes of the organization listings.
const (
	defaultOrgPage = 50
	maxOrgPage     = 200
)

// orgInfo is an organization as listed, its money in credits.
type orgInfo struct {
	ID            string        `json:"id"`
	Name          string        `json:"name"`
	Balance       agentd.Micros `json:"balance"`
	Held          agentd.Micros `json:"held"`
	Available     agentd.Micros `json:"available"`
	HoldsInFlight int           `json:"holds_in_flight"`
	CreatedAt     string        `json:"created_at"`
}

// listOrgs lists every organization in name order, a page at a time, with what
// billing sees of its money now.
func (s *Server) listOrgs(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	limit, err := pageLimit(r, defaultOrgPage, maxOrgPage)
	if err != nil {
		return err
	}
	list, next, err := s.Accounts.Orgs(r.Context(), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	out := make([]orgInfo, len(list))
	for i, o := range list {
		out[i] = orgInfo{
			ID: o.Org.ID, Name: o.Org.Name, Balance: o.Balance, Held: o.Held, Available: o.Balance - o.Held,
			HoldsInFlight: o.Holds, CreatedAt: isoTime(o.Org.CreatedAt),
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": out, "next_cursor": nextCursor(next)})
}

// grantInfo is one credit grant or correction, its amount in credits.
type grantInfo struct {
	ID        string        `json:"id"`
	Amount    agentd.Micros `json:"amount"`
	CreatedAt string        `json:"created_at"`
	KeyID     string        `json:"key_id"`
	KeyName   *string       `json:"key_name"` // null when the key no longer exists
}

// creditHistory lists an organization's (id or name) credit grants and
// corrections, the newest first, a page at a time.
func (s *Server) creditHistory(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	limit, err := pageLimit(r, defaultOrgPage, maxOrgPage)
	if err != nil {
		return err
	}
	org, err := s.Ledger.Org(r.Context(), r.PathValue("org"))
	if err != nil {
		return err
	}
	grants, next, err := s.Ledger.Grants(r.Context(), org.ID, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	out := make([]grantInfo, len(grants))
	for i, g := range grants {
		out[i] = grantInfo{ID: g.ID, Amount: g.Amount, CreatedAt: isoTime(g.CreatedAt), KeyID: g.KeyID}
		if g.KeyName != "" {
			out[i].KeyName = &g.KeyName
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"org_id": org.ID, "org_name": org.Name, "data": out, "next_cursor": nextCursor(next),
	})
}
