package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
)

var orgNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *Server) createOrg(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var req struct {
		Name *string `json:"name"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Name == nil:
		return agentd.Invalid("Field required", "missing", "body", "name")
	case !orgNamePattern.MatchString(*req.Name) || strings.HasPrefix(*req.Name, "org-"):
		return agentd.Invalid("name must be 1 to 64 characters of A-Z a-z 0-9 . _ -, start with a letter or digit, and not start with org-", "string_pattern_mismatch", "body", "name")
	}
	o, err := s.Ledger.CreateOrg(r.Context(), *req.Name, p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": o.ID, "name": o.Name, "balance": o.Balance}})
}

func (s *Server) grantCredits(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var req struct {
		Amount *float64 `json:"amount"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if req.Amount == nil {
		return agentd.Invalid("Field required", "missing", "body", "amount")
	}
	amount, err := agentd.CreditsToMicros(*req.Amount)
	if err != nil || amount == 0 {
		return agentd.Invalid(fmt.Sprintf("amount must be a non-zero number of credits, at least 0.000001 and at most %d in size", agentd.MaxMicros/agentd.MicrosPerCredit), "value_error", "body", "amount")
	}
	org, err := s.Ledger.Org(r.Context(), r.PathValue("org"))
	if err != nil {
		return err
	}
	st, err := s.Accounts.Grant(r.Context(), org.ID, amount, p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"org_id": org.ID, "org_name": org.Name, "amount": amount,
		"balance": st.Balance, "held": st.Held, "available": st.Balance - st.Held,
	}})
}

func (s *Server) billing(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	st, err := s.Accounts.State(r.Context(), p.OrgID)
	if err != nil {
		return err
	}
	data := map[string]any{
		"org_id": p.OrgID, "org_name": p.OrgName,
		"balance": st.Balance, "held": st.Held, "available": st.Balance - st.Held, "holds_in_flight": st.Holds,
		"unit": "credits", "key": nil,
	}
	ks, err := s.Accounts.KeyState(r.Context(), p.OrgID, p.KeyID)
	if err != nil {
		return err
	}
	if ks.Budget.Set {
		var start *string
		if !ks.PeriodStart.IsZero() {
			v := isoTime(ks.PeriodStart)
			start = &v
		}
		data["key"] = map[string]any{
			"id": p.KeyID, "budget": ks.Budget.Limit, "budget_period": ks.Budget.Period,
			"spent": ks.Spent, "held": ks.Held, "available": ks.Available,
			"period_start": start,
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

// keyBudget decodes a key's budget fields: budget in credits (null: none) and its
// period. Absent fields leave the current value (cur) as it is.
func keyBudget(raw json.RawMessage, period *string, cur agentd.Budget) (agentd.Budget, error) {
	b := cur
	if raw != nil {
		if string(raw) == "null" {
			b.Set, b.Limit = false, 0
		} else {
			var credits float64
			if err := json.Unmarshal(raw, &credits); err != nil {
				return b, agentd.Invalid("budget must be a number of credits or null", "float_type", "body", "budget")
			}
			m, err := agentd.CreditsToMicros(credits)
			if err != nil || m < 0 {
				return b, agentd.Invalid(fmt.Sprintf("budget must be a number of credits between 0 and %d", agentd.MaxMicros/agentd.MicrosPerCredit), "greater_than_equal", "body", "budget")
			}
			b.Set, b.Limit = true, m
		}
	}
	if period != nil {
		if b.Period = agentd.Period(*period); !b.Period.Valid() {
			return b, agentd.Invalid("budget_period must be none, daily or monthly", "enum", "body", "budget_period")
		}
	}
	if b.Period == "" {
		b.Period = agentd.PeriodNone
	}
	return b, nil
}

// updateKey changes a key's budget and its own rate limits: auth decides whether
// the caller may touch the key, billing stores the budget, auth the limits.
func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var req struct {
		Budget       json.RawMessage `json:"budget"`
		BudgetPeriod *string         `json:"budget_period"`
		// RateLimits is {rpm, tpm, concurrent} (ratelimits.go): a member left out
		// stays as it is, null is the default; null for the whole resets all three.
		RateLimits json.RawMessage `json:"rate_limits"`
		// Agents and ExpiresAt (access.go): absent stays, null clears.
		Agents    json.RawMessage `json:"agents"`
		ExpiresAt json.RawMessage `json:"expires_at"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	budgetAsked := req.Budget != nil || req.BudgetPeriod != nil
	accessAsked := req.Agents != nil || req.ExpiresAt != nil
	act := auth.Budget
	switch {
	case budgetAsked:
	case req.RateLimits != nil:
		act = auth.Limits
	case accessAsked:
		act = auth.Access
	}
	k, err := s.Keys.Manage(r.Context(), p, r.PathValue("id"), act)
	if err != nil {
		return err
	}
	b, err := keyBudget(req.Budget, req.BudgetPeriod, k.Budget)
	if err != nil {
		return err
	}
	limits, err := keyRateLimits(req.RateLimits, k.RateLimits)
	if err != nil {
		return err
	}
	access, err := keyAccess(req.Agents, req.ExpiresAt, auth.KeyAccess{Agents: k.Agents, ExpiresAt: k.ExpiresAt})
	if err != nil {
		return err
	}
	// Refuse every mistake of the caller before anything changes: the budget,
	// the limits and the access are written one after the other.
	if req.RateLimits != nil {
		if err := auth.CheckRateLimits(limits); err != nil {
			return err
		}
	}
	if accessAsked {
		if err := s.Keys.CheckAccess(p, access); err != nil {
			return err
		}
	}
	if budgetAsked || (req.RateLimits == nil && !accessAsked) {
		if _, err := s.Accounts.SetBudget(r.Context(), k.OrgID, k.ID, b, p); err != nil {
			return err
		}
		k.Budget = b
	}
	if req.RateLimits != nil {
		if k, err = s.Keys.SetRateLimits(r.Context(), p, k.ID, limits); err != nil {
			return err
		}
	}
	if accessAsked {
		budget := k.Budget
		if k, err = s.Keys.SetAccess(r.Context(), p, k.ID, access); err != nil {
			return err
		}
		k.Budget = budget
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": toKeyInfo(k)})
}

// keyInfo is a key as listed: never the secret.
type keyInfo struct {
	ID        string         `json:"id"`
	Name      string         `json:"name"`
	Owner     string         `json:"owner"`
	OrgID     string         `json:"org_id"`
	Prefix    string         `json:"prefix"`
	Scopes    []agentd.Scope `json:"scopes"`
	CreatedAt string         `json:"created_at"`
	RevokedAt *string        `json:"revoked_at"`
	// Budget is in credits per BudgetPeriod; null: the key spends from its
	// organization without a limit of its own.
	Budget       *agentd.Micros `json:"budget"`
	BudgetPeriod agentd.Period  `json:"budget_period"`
	// RateLimits are the key's own; null members: the configured defaults.
	RateLimits rateLimitsInfo `json:"rate_limits"`
	// Agents is the key's allow-list ([]: every agent); ExpiresAt its expiry
	// (null: never).
	Agents    []string `json:"agents"`
	ExpiresAt *string  `json:"expires_at"`
	Key       string   `json:"key,omitempty"` // only in the response that creates it
}

func toKeyInfo(k *agentd.Key) keyInfo {
	ki := keyInfo{ID: k.ID, Name: k.Name, Owner: k.Owner, OrgID: k.OrgID, Prefix: k.Prefix, Scopes: k.Scopes,
		CreatedAt: isoTime(k.CreatedAt), BudgetPeriod: k.Budget.Period, RateLimits: toRateLimitsInfo(k.RateLimits)}
	if k.Budget.Set {
		ki.Budget = &k.Budget.Limit
	}
	if k.RevokedAt != nil {
		t := isoTime(*k.RevokedAt)
		ki.RevokedAt = &t
	}
	ki.Agents = k.Agents
	if ki.Agents == nil {
		ki.Agents = []string{}
	}
	if k.ExpiresAt != nil {
		t := rfc3339(*k.ExpiresAt)
		ki.ExpiresAt = &t
	}
	return ki
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var req struct {
		Name   *string   `json:"name"`
		Scopes *[]string `json:"scopes"`
		OrgID  *string   `json:"org_id"`
		Owner  *string   `json:"owner"`
		// Budget in credits per BudgetPeriod (none, daily, monthly); absent or null:
		// no budget of its own.
		Budget       json.RawMessage `json:"budget"`
		BudgetPeriod *string         `json:"budget_period"`
		// Agents is an allow-list of agents (absent or []: every agent);
		// ExpiresAt an RFC 3339 time (absent or null: never).
		Agents    json.RawMessage `json:"agents"`
		ExpiresAt json.RawMessage `json:"expires_at"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	budget, err := keyBudget(req.Budget, req.BudgetPeriod, agentd.Budget{})
	if err != nil {
		return err
	}
	access, err := keyAccess(req.Agents, req.ExpiresAt, auth.KeyAccess{})
	if err != nil {
		return err
	}
	spec := auth.KeySpec{Budget: budget, Access: access}
	if req.Name != nil {
		spec.Name = *req.Name
	}
	if req.OrgID != nil {
		spec.Org = *req.OrgID
	}
	if req.Owner != nil {
		spec.Owner = *req.Owner
	}
	if req.Scopes != nil {
		spec.Scopes = make([]agentd.Scope, len(*req.Scopes))
		for i, sc := range *req.Scopes {
			spec.Scopes[i] = agentd.Scope(sc)
		}
	}
	k, secret, err := s.Keys.Mint(r.Context(), p, spec)
	if err != nil {
		return err
	}
	ki := toKeyInfo(k)
	ki.Key = secret
	return writeJSON(w, http.StatusOK, map[string]any{"data": ki})
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	keys, err := s.Keys.List(r.Context(), p, r.URL.Query().Get("org_id"))
	if err != nil {
		return err
	}
	out := make([]keyInfo, len(keys))
	for i, k := range keys {
		out[i] = toKeyInfo(k)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": out})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	id := r.PathValue("id")
	if err := s.Keys.Revoke(r.Context(), p, id); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": id, "revoked": true}})
}
