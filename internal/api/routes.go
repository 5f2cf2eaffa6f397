package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/agentd/agentd"
)

// routes lists every endpoint. Literal segments (create, usage, available_models,
// run-agents) are more specific than {agent_id}, so ServeMux matches them first;
// ReservedAgentNames keeps agents from taking those names.
func (s *Server) routes(mux handleFuncer) {
	mux.HandleFunc("GET /healthz", s.public(s.healthz))
	mux.HandleFunc("GET /readyz", s.public(s.readyz))
	// Prometheus metrics (metrics.go), behind a bearer token of their own.
	mux.HandleFunc("GET /metrics", s.public(s.metrics))

	// NuGen agents API. s.metered counts a request that does work against its
	// key's and organization's requests per minute (ratelimits.go).
	mux.HandleFunc("POST /api/v3/agents/create", s.with(agentd.ScopeAgentsWrite, s.createAgent))
	mux.HandleFunc("GET /api/v3/agents", s.with(agentd.ScopeAgentsRead, s.listAgents))
	mux.HandleFunc("GET /api/v3/agents/available_models", s.with(agentd.ScopeAgentsRead, s.availableModels))
	mux.HandleFunc("GET /api/v3/agents/{agent_id}", s.with(agentd.ScopeAgentsRead, s.getAgent))
	mux.HandleFunc("PATCH /api/v3/agents/{agent_id}", s.with(agentd.ScopeAgentsWrite, s.updateAgent))
	mux.HandleFunc("DELETE /api/v3/agents/{agent_id}", s.with(agentd.ScopeAgentsWrite, s.deleteAgent))
	mux.HandleFunc("POST /api/v3/agents/run-agents/{agent_name}/run", s.with(agentd.ScopeRun, s.metered(s.runAgent)))
	mux.HandleFunc("POST /api/v3/agents/run-agents/{agent_name}/estimate", s.with(agentd.ScopeRun, s.metered(s.estimate)))
	mux.HandleFunc("POST /api/v3/agents/{agent_id}/run", s.with(agentd.ScopeRun, s.metered(s.runAgentByID)))
	mux.HandleFunc("GET /api/v3/models/base", s.with(agentd.ScopeAgentsRead, s.baseModels))

	// An agent's versions (versions.go), an extension: list, read, diff, store a
	// draft (or a new active version), activate one (rollback or promotion).
	mux.HandleFunc("GET /api/v3/agents/{agent_id}/versions", s.with(agentd.ScopeAgentsRead, s.listVersions))
	mux.HandleFunc("POST /api/v3/agents/{agent_id}/versions", s.with(agentd.ScopeAgentsWrite, s.createVersion))
	mux.HandleFunc("GET /api/v3/agents/{agent_id}/versions/{n}", s.with(agentd.ScopeAgentsRead, s.getVersion))
	mux.HandleFunc("GET /api/v3/agents/{agent_id}/versions/{n}/diff", s.with(agentd.ScopeAgentsRead, s.diffVersions))
	mux.HandleFunc("POST /api/v3/agents/{agent_id}/versions/{n}/activate", s.with(agentd.ScopeAgentsWrite, s.activateVersion))

	// Sessions (sessions.go), an extension: the caller's own conversations with an
	// agent (by id or name), scoped by organization and key owner. Whoever may run
	// an agent may list, read and delete their sessions on it.
	mux.HandleFunc("GET /api/v3/agents/{agent_id}/sessions", s.with(agentd.ScopeRun, s.listSessions))
	mux.HandleFunc("GET /api/v3/agents/{agent_id}/sessions/{session_id}", s.with(agentd.ScopeRun, s.getSession))
	mux.HandleFunc("DELETE /api/v3/agents/{agent_id}/sessions/{session_id}", s.with(agentd.ScopeRun, s.deleteSession))

	// Evals (evals.go), an extension: a version's demonstrations and the body's
	// cases run as real runs, the report stored and the version's eval status set;
	// GET answers the newest report.
	mux.HandleFunc("POST /api/v3/agents/{agent_id}/versions/{n}/evals", s.with(agentd.ScopeAgentsWrite, s.metered(s.runEvals)))
	mux.HandleFunc("GET /api/v3/agents/{agent_id}/versions/{n}/evals", s.with(agentd.ScopeAgentsRead, s.latestEvals))

	// Usage record (usage.go): NuGen's summary, whose literal "usage" segment beats
	// {agent_id}; then, as extensions, the ledger's rows (JSON pages or CSV) and
	// summaries of the daily rollups.
	mux.HandleFunc("GET /api/v3/agents/usage", s.with(agentd.ScopeUsage, s.agentsUsage))
	mux.HandleFunc("GET /api/v3/usage/records", s.with(agentd.ScopeUsage, s.usageRecords))
	mux.HandleFunc("GET /api/v3/usage/summary", s.with(agentd.ScopeUsage, s.usageSummary))

	// Extensions: organizations, credits, keys, billing.
	mux.HandleFunc("POST /api/v3/admin/orgs", s.with(agentd.ScopeOperator, s.createOrg))
	mux.HandleFunc("GET /api/v3/admin/orgs", s.with(agentd.ScopeOperator, s.listOrgs))
	mux.HandleFunc("POST /api/v3/admin/orgs/{org}/credits", s.with(agentd.ScopeOperator, s.grantCredits))
	mux.HandleFunc("GET /api/v3/admin/orgs/{org}/credits", s.with(agentd.ScopeOperator, s.creditHistory))
	mux.HandleFunc("POST /api/v3/keys", s.with(agentd.ScopeAdmin, s.createKey))
	mux.HandleFunc("GET /api/v3/keys", s.with(agentd.ScopeAdmin, s.listKeys))
	mux.HandleFunc("DELETE /api/v3/keys/{id}", s.with(agentd.ScopeAdmin, s.revokeKey))
	mux.HandleFunc("PATCH /api/v3/keys/{id}", s.with(agentd.ScopeAdmin, s.updateKey))
	mux.HandleFunc("GET /api/v3/billing", s.with(agentd.ScopeUsage, s.billing))
	// The audit trail of every change above and of agents' (audit.go): an
	// operator reads every organization's, an admin its own.
	mux.HandleFunc("GET /api/v3/admin/audit", s.with(agentd.ScopeAdmin, s.auditLog))

	// OpenAI-compatible inference (openai.go): model is a catalog model or
	// "agent/<name>"; every error, authentication's included, in OpenAI's envelope,
	// also for paths under /v1 that no route serves. NuGen's inference path is the
	// same chat endpoint.
	mux.HandleFunc("POST /v1/chat/completions", s.withOpenAI(s.metered(s.chatCompletions), agentd.ScopeRun))
	mux.HandleFunc("POST /v1/completions", s.withOpenAI(s.metered(s.completions), agentd.ScopeRun))
	mux.HandleFunc("POST /v1/embeddings", s.withOpenAI(s.metered(s.embeddings), agentd.ScopeRun))
	mux.HandleFunc("POST /api/v3/inference/chat/completions", s.withOpenAI(s.metered(s.chatCompletions), agentd.ScopeRun))
	mux.HandleFunc("POST /api/v3/inference/completions", s.withOpenAI(s.metered(s.completions), agentd.ScopeRun))
	mux.HandleFunc("POST /api/v3/inference/embeddings", s.withOpenAI(s.metered(s.embeddings), agentd.ScopeRun))
	mux.HandleFunc("GET /v1/models", s.withOpenAI(s.listModels, agentd.ScopeAgentsRead, agentd.ScopeRun))
	mux.HandleFunc("GET /v1/models/{id...}", s.withOpenAI(s.getModel, agentd.ScopeAgentsRead, agentd.ScopeRun))
	mux.HandleFunc("/v1/", s.openAINoRoute(mux))
	mux.HandleFunc("/v1", s.openAINoRoute(mux))
}

// readyz answers 200 while this server should get traffic: its database answers
// and takes writes, and it is not draining for shutdown; 503 otherwise, so a load
// balancer stops sending before requests would fail.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.Draining.Load() {
		return &agentd.Error{Code: agentd.EUnavailable, Message: "shutting down"}
	}
	if err := s.Ready(r.Context()); err != nil {
		return &agentd.Error{Code: agentd.EUnavailable, Message: "database not ready", Err: err}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleFuncer is what routes registers on: a ServeMux, or a recorder of patterns.
type handleFuncer interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
}

type patterns []string

func (p *patterns) HandleFunc(pattern string, _ func(http.ResponseWriter, *http.Request)) {
	*p = append(*p, pattern)
}

// agentsPrefix is where agents are addressed by id or name: /api/v3/agents/{agent_id}.
const agentsPrefix = "/api/v3/agents/"

// ReservedAgentNames are the names no agent may take: every literal segment a
// route has where other routes take an agent's id or name, normalized as names
// are (a name "usage" would be shadowed by GET /api/v3/agents/usage).
func ReservedAgentNames() []string {
	var ps patterns
	(&Server{}).routes(&ps)
	var names []string
	for _, p := range ps {
		_, path, _ := strings.Cut(p, " ")
		rest, ok := strings.CutPrefix(path, agentsPrefix)
		if !ok {
			continue
		}
		seg, _, _ := strings.Cut(rest, "/")
		if seg == "" || strings.HasPrefix(seg, "{") {
			continue
		}
		if n := agentd.NormalizeName(seg); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}
