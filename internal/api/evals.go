package api

import (
	"net/http"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/evals"
	"github.com/agentd/agentd/internal/run"
)

// runEvals is POST /api/v3/agents/{agent_id}/versions/{n}/evals: the version's
// demonstrations (unless ?demonstrations=false) and the body's cases (optional: a
// JSON list in the cases-file format) run as real runs of the caller's key; the
// report is stored, sets the version's eval status, and is answered (200 whether
// the cases passed or not: the report's status says).
func (s *Server) runEvals(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	n, err := versionNumber(r, "n")
	if err != nil {
		return err
	}
	req := &run.EvalRequest{Principal: p, Agent: r.PathValue("agent_id"), Version: n}
	switch d := r.URL.Query().Get("demonstrations"); d {
	case "", "true":
	case "false":
		req.NoDemonstrations = true
	default:
		return agentd.Invalid("demonstrations is true or false", "bool_parsing", "query", "demonstrations")
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if req.Cases, err = evals.Parse("body", body); err != nil {
		return agentd.Invalid(err.Error(), "value_error", "body")
	}
	rep, err := s.Runner.Eval(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}

// latestEvals is GET /api/v3/agents/{agent_id}/versions/{n}/evals: the newest
// stored report of the version; 404 when it was never evaluated.
func (s *Server) latestEvals(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	n, err := versionNumber(r, "n")
	if err != nil {
		return err
	}
	rep, err := s.Runner.LatestEval(r.Context(), p, r.PathValue("agent_id"), n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}
