package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
	"github.com/agentd/agentd/internal/store"
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
	o := &store.Org{ID: agentd.NewID("org"), Name: *req.Name, Created: s.Now().UnixMicro()}
	if err := s.DB.Tx(r.Context(), func(tx *store.Tx) error { return tx.CreateOrg(r.Context(), o) }); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": o})
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
		return agentd.Invalid("amount must be a non-zero number of credits (at least 0.000001 in size)", "value_error", "body", "amount")
	}
	org, err := s.DB.Org(r.Context(), r.PathValue("org"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	g := &store.Grant{ID: agentd.NewID("grant"), OrgID: org.ID, Amount: amount, KeyID: p.KeyID, Created: s.Now().UnixMicro()}
	_, err = s.Accounts.Adjust(ctx, org.ID, amount, func() (bal agentd.Micros, err error) {
		err = s.DB.Tx(ctx, func(tx *store.Tx) error {
			bal, err = tx.GrantCredits(ctx, g)
			return err
		})
		return bal, err
	})
	if err != nil {
		return err
	}
	st, err := s.Accounts.State(ctx, org.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"org_id": org.ID, "org_name": org.Name, "grant_id": g.ID, "amount": amount,
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
		data["key"] = map[string]any{
			"id": p.KeyID, "budget": ks.Budget.Limit, "budget_period": ks.Budget.Period,
			"spent": ks.Budget.Spent, "held": ks.Held, "available": ks.Available,
			"period_start": isoTime(ks.PeriodStart),
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

// keyBudget decodes a key's budget fields: budget in credits (null: none) and its
// period. Absent fields leave the current value (cur) as it is.
func keyBudget(raw json.RawMessage, period *string, cur store.Budget) (store.Budget, error) {
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
				return b, agentd.Invalid("budget must be a non-negative number of credits", "greater_than_equal", "body", "budget")
			}
			b.Set, b.Limit = true, m
		}
	}
	if period != nil {
		switch *period {
		case store.PeriodNone, store.PeriodDaily, store.PeriodMonthly:
			b.Period = *period
		default:
			return b, agentd.Invalid("budget_period must be none, daily or monthly", "enum", "body", "budget_period")
		}
	}
	if b.Period == "" {
		b.Period = store.PeriodNone
	}
	return b, nil
}

// updateKey changes a key's budget.
func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var req struct {
		Budget       json.RawMessage `json:"budget"`
		BudgetPeriod *string         `json:"budget_period"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	k, err := s.DB.KeyByID(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if k.OrgID != p.OrgID && !p.Can(agentd.ScopeOperator) {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", k.ID)
	}
	b, err := keyBudget(req.Budget, req.BudgetPeriod, k.Budget)
	if err != nil {
		return err
	}
	if err := s.DB.Tx(r.Context(), func(tx *store.Tx) error {
		return tx.SetKeyBudget(r.Context(), k.OrgID, k.ID, b.Set, b.Limit, b.Period)
	}); err != nil {
		return err
	}
	if err := s.Accounts.SetBudget(r.Context(), k.OrgID, k.ID, b.Set, b.Limit, b.Period); err != nil {
		return err
	}
	k.Budget.Set, k.Budget.Limit, k.Budget.Period = b.Set, b.Limit, b.Period
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
	BudgetPeriod string         `json:"budget_period"`
	Key          string         `json:"key,omitempty"` // only in the response that creates it
}

func toKeyInfo(k *store.Key) keyInfo {
	ki := keyInfo{ID: k.ID, Name: k.Name, Owner: k.Owner, OrgID: k.OrgID, Prefix: k.Prefix, Scopes: k.Scopes,
		CreatedAt: isoTime(fromMicros(k.Created)), BudgetPeriod: k.Budget.Period}
	if k.Budget.Set {
		ki.Budget = &k.Budget.Limit
	}
	if k.Revoked.Valid {
		t := isoTime(fromMicros(k.Revoked.Int64))
		ki.RevokedAt = &t
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
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	budget, err := keyBudget(req.Budget, req.BudgetPeriod, store.Budget{})
	if err != nil {
		return err
	}
	if req.Name == nil || strings.TrimSpace(*req.Name) == "" || len(*req.Name) > 128 {
		return agentd.Invalid("name is required: 1 to 128 characters", "missing", "body", "name")
	}
	orgID := p.OrgID
	if req.OrgID != nil && *req.OrgID != p.OrgID {
		if !p.Can(agentd.ScopeOperator) {
			return agentd.Errorf(agentd.EForbidden, "only an operator key can create keys for another organization")
		}
		org, err := s.DB.Org(r.Context(), *req.OrgID)
		if err != nil {
			return err
		}
		orgID = org.ID
	}
	scopes := []agentd.Scope{agentd.ScopeRun}
	if req.Scopes != nil {
		if len(*req.Scopes) == 0 {
			return agentd.Invalid("scopes must name at least one scope", "too_short", "body", "scopes")
		}
		scopes = scopes[:0]
		for i, sc := range *req.Scopes {
			if !agentd.ValidScope(agentd.Scope(sc)) {
				return agentd.Invalid("unknown scope "+sc+"; scopes are operator, admin, agents:write, agents:read, run, usage", "enum", "body", "scopes", i)
			}
			if !p.Can(agentd.Scope(sc)) {
				return agentd.Errorf(agentd.EForbidden, "a key cannot grant the %q scope it does not hold", sc)
			}
			scopes = append(scopes, agentd.Scope(sc))
		}
	}
	secret := auth.Mint()
	k := &store.Key{
		ID: agentd.NewID("key"), OrgID: orgID, Name: strings.TrimSpace(*req.Name),
		Prefix: auth.Prefix(secret), Hash: auth.Hash(secret), Scopes: scopes, Created: s.Now().UnixMicro(),
		Budget: budget,
	}
	k.Owner = k.ID
	if req.Owner != nil && *req.Owner != "" {
		if len(*req.Owner) > 128 {
			return agentd.Invalid("owner must be at most 128 characters", "string_too_long", "body", "owner")
		}
		k.Owner = *req.Owner
	}
	if err := s.DB.Tx(r.Context(), func(tx *store.Tx) error { return tx.CreateKey(r.Context(), k) }); err != nil {
		return err
	}
	ki := toKeyInfo(k)
	ki.Key = secret
	return writeJSON(w, http.StatusOK, map[string]any{"data": ki})
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	orgID := p.OrgID
	if q := r.URL.Query().Get("org_id"); q != "" && q != p.OrgID {
		if !p.Can(agentd.ScopeOperator) {
			return agentd.Errorf(agentd.EForbidden, "only an operator key can list another organization's keys")
		}
		org, err := s.DB.Org(r.Context(), q)
		if err != nil {
			return err
		}
		orgID = org.ID
	}
	keys, err := s.DB.Keys(r.Context(), orgID)
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
	orgID := p.OrgID
	if p.Can(agentd.ScopeOperator) {
		orgID = "" // an operator may revoke any key
	}
	now := s.Now().UnixMicro()
	if err := s.DB.Tx(r.Context(), func(tx *store.Tx) error { return tx.RevokeKey(r.Context(), orgID, id, now) }); err != nil {
		return err
	}
	s.Auth.Evict(id)
	return writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": id, "revoked": true}})
}
