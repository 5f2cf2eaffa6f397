package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
)

// An agent's versions (agents/versions.go): the listing, one version whole, the
// diff of two, drafts, activation (rollback or promotion), and the pinning of a
// run to a version (X-Agent-Version, or "agent/<name>@N" on the OpenAI routes).

// agentVersion reads X-Agent-Version: a version number ≥ 1, or absent (0).
func agentVersion(r *http.Request) (int, error) {
	v := r.Header.Get("X-Agent-Version")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, agentd.Invalid("X-Agent-Version must be a version number (1, 2, …): GET /api/v3/agents/{agent}/versions lists them", "int_parsing", "header", "X-Agent-Version")
	}
	return n, nil
}

// pinnedModel splits "<name>@N" (the part of a model after "agent/") into the
// name and the version pinned; without "@" the version is 0.
func pinnedModel(name string) (string, int, error) {
	base, num, ok := strings.Cut(name, "@")
	if !ok {
		return name, 0, nil
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return "", 0, agentd.Invalid("model agent/<name>@<version> needs a version number (1, 2, …) after @", "value_error", "body", "model")
	}
	return base, n, nil
}

// versionNumber reads the path's {n}.
func versionNumber(r *http.Request, name string) (int, error) {
	n, err := strconv.Atoi(r.PathValue(name))
	if err != nil || n < 1 {
		return 0, agentd.Invalid("a version is a number (1, 2, …)", "int_parsing", "path", name)
	}
	return n, nil
}

// versionSummary is one version in the listing.
type versionSummary struct {
	Version     int     `json:"version"`
	AuthorKeyID string  `json:"author_key_id"`
	CreatedDate string  `json:"created_date"`
	Note        string  `json:"note"`
	Model       string  `json:"model"`
	EvalStatus  *string `json:"eval_status"` // null: never evaluated
	Active      bool    `json:"active"`
}

func evalStatus(v *agentd.Version) *string {
	if v.EvalStatus == "" {
		return nil
	}
	return &v.EvalStatus
}

const (
	defaultVersionPage = 50
	maxVersionPage     = 200
)

// listVersions is GET /api/v3/agents/{agent_id}/versions: newest first, paged.
func (s *Server) listVersions(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	limit, err := pageLimit(r, defaultVersionPage, maxVersionPage)
	if err != nil {
		return err
	}
	a, vs, next, err := s.Agents.Versions(r.Context(), p, r.PathValue("agent_id"), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	out := make([]versionSummary, len(vs))
	for i := range vs {
		v := &vs[i]
		out[i] = versionSummary{Version: v.Number, AuthorKeyID: v.AuthorKeyID, CreatedDate: isoTime(v.CreatedAt), Note: v.Note,
			Model: v.Model, EvalStatus: evalStatus(v), Active: v.Number == a.Version.Number}
	}
	resp := map[string]any{"agent_id": a.ID, "active_version": a.Version.Number, "versions": out, "next_cursor": nextCursor(next), "canary": a.Canary}
	return writeJSON(w, http.StatusOK, resp)
}

// versionInfo is one version whole: the agent's fields as GET of the agent names
// them, with this version's configuration, and what the listing says of it.
type versionInfo struct {
	*agentInfo
	Note        string  `json:"note"`
	AuthorKeyID string  `json:"author_key_id"`
	EvalStatus  *string `json:"eval_status"`
	Active      bool    `json:"active"`
	VersionDate string  `json:"version_created_date"`
}

func (s *Server) versionInfo(a *agentd.Agent, active int) *versionInfo {
	return &versionInfo{agentInfo: s.agentInfo(a), Note: a.Version.Note, AuthorKeyID: a.Version.AuthorKeyID,
		EvalStatus: evalStatus(&a.Version), Active: a.Version.Number == active, VersionDate: isoTime(a.Version.CreatedAt)}
}

// getVersion is GET /api/v3/agents/{agent_id}/versions/{n}.
func (s *Server) getVersion(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	n, err := versionNumber(r, "n")
	if err != nil {
		return err
	}
	a, active, err := s.Agents.Version(r.Context(), p, r.PathValue("agent_id"), n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": s.versionInfo(a, active)})
}

// diffVersions is GET /api/v3/agents/{agent_id}/versions/{n}/diff?against=m: what
// changed from version m (default n − 1) to version n.
func (s *Server) diffVersions(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	n, err := versionNumber(r, "n")
	if err != nil {
		return err
	}
	against := n - 1
	if v := r.URL.Query().Get("against"); v != "" {
		if against, err = strconv.Atoi(v); err != nil || against < 1 {
			return agentd.Invalid("against must be a version number (1, 2, …)", "int_parsing", "query", "against")
		}
	} else if against < 1 {
		return agentd.Invalid("version 1 has no version before it: name one with against", "missing", "query", "against")
	}
	id := r.PathValue("agent_id")
	from, _, err := s.Agents.Version(r.Context(), p, id, against)
	if err != nil {
		return err
	}
	to, _, err := s.Agents.Version(r.Context(), p, id, n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, agents.Diff(&from.Version, &to.Version))
}

// versionRequest is the body of POST /api/v3/agents/{agent_id}/versions: the
// configuration fields of an update, and whether the version becomes active
// (absent: it does, as a PATCH).
type versionRequest struct {
	agentRequest
	Activate *bool `json:"activate"`
}

// createVersion is POST /api/v3/agents/{agent_id}/versions.
func (s *Server) createVersion(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	var req versionRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	sp, err := req.spec()
	if err != nil {
		return err
	}
	activate := req.Activate == nil || *req.Activate
	a, err := s.Agents.AddVersion(r.Context(), p, r.PathValue("agent_id"), sp, activate)
	if err != nil {
		return err
	}
	active := a.Version.Number
	if !activate {
		active = 0 // a draft is not the active version
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": s.versionInfo(a, active)})
}

// activateVersion is POST /api/v3/agents/{agent_id}/versions/{n}/activate; with
// require_evals=true a version whose evaluation has not passed is 409.
func (s *Server) activateVersion(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	n, err := versionNumber(r, "n")
	if err != nil {
		return err
	}
	require, err := queryBool(r, "require_evals")
	if err != nil {
		return err
	}
	a, err := s.Agents.ActivateVersion(r.Context(), p, r.PathValue("agent_id"), n, require)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": s.agentInfo(a)})
}

// canaryField reads the request's canary: an object sets it, null removes it.
func canaryField(raw json.RawMessage) (set *agentd.Canary, remove bool, err error) {
	if raw == nil {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	var c struct {
		Version *int     `json:"version"`
		Percent *float64 `json:"percent"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, false, agentd.Invalid("canary must be an object {version, percent} or null", "model_type", "body", "canary")
	}
	switch {
	case c.Version == nil:
		return nil, false, agentd.Invalid("Field required", "missing", "body", "canary", "version")
	case c.Percent == nil:
		return nil, false, agentd.Invalid("Field required", "missing", "body", "canary", "percent")
	}
	return &agentd.Canary{Version: *c.Version, Percent: *c.Percent}, false, nil
}
