package api

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/agents"
	"github.com/agentd/agentd/internal/catalog"
)

// agentRequest is the body of create and update. Every field may be null, which
// means absent. Both max_token (the schema) and max_tokens (examples) are accepted.
type agentRequest struct {
	AgentName          *string          `json:"agent_name"`
	AgentDescription   *string          `json:"agent_description"`
	Model              *string          `json:"model"`
	MaxToken           *int             `json:"max_token"`
	MaxTokens          *int             `json:"max_tokens"`
	Temperature        *float64         `json:"temperature"`
	Instructions       *string          `json:"instructions"`
	Demonstrations     *[]demonstration `json:"demonstrations"`
	Status             *string          `json:"status"`
	ConversationSaving *bool            `json:"conversation_saving_enabled"`
	// agentd's extensions, in OpenAI's JSON: sent with every run.
	Tools          json.RawMessage `json:"tools"`
	ResponseFormat json.RawMessage `json:"response_format"`
	// Note is stored with the version the change makes; canary is {version,
	// percent}, or null to remove it (versions.go).
	Note   *string         `json:"note"`
	Canary json.RawMessage `json:"canary"`
}

// demonstration accepts the documented {input, output} and the {user_input,
// model_output} that NuGen's own examples send.
type demonstration struct {
	Input       *string `json:"input"`
	Output      *string `json:"output"`
	UserInput   *string `json:"user_input"`
	ModelOutput *string `json:"model_output"`
}

func (req *agentRequest) spec() (agents.Spec, error) {
	sp := agents.Spec{
		Name: req.AgentName, Description: req.AgentDescription, Model: req.Model,
		Temperature: req.Temperature, Instructions: req.Instructions,
		Status: req.Status, ConversationSaving: req.ConversationSaving,
		MaxTokens: req.MaxToken, Tools: req.Tools, ResponseFormat: req.ResponseFormat, Note: req.Note,
	}
	var err error
	if sp.Canary, sp.RemoveCanary, err = canaryField(req.Canary); err != nil {
		return sp, err
	}
	if sp.MaxTokens == nil {
		sp.MaxTokens = req.MaxTokens
	}
	if req.Demonstrations != nil {
		demos := make([]agentd.Demonstration, len(*req.Demonstrations))
		for i, d := range *req.Demonstrations {
			in, out := d.Input, d.Output
			if in == nil && out == nil {
				in, out = d.UserInput, d.ModelOutput
			}
			if in == nil || out == nil {
				return sp, agentd.Invalid("a demonstration needs input and output (or user_input and model_output)", "missing", "body", "demonstrations", i)
			}
			demos[i] = agentd.Demonstration{Input: *in, Output: *out}
		}
		sp.Demonstrations = &demos
	}
	return sp, nil
}

// agentInfo is NuGen's AgentInfo, snake_case, with the extensions agentd adds.
type agentInfo struct {
	ID                 string                 `json:"id"`
	Name               string                 `json:"name"`
	Description        string                 `json:"description"`
	BaseModel          string                 `json:"base_model"`
	BaseModelName      string                 `json:"base_model_name"`
	CreatedDate        string                 `json:"created_date"`
	UpdatedDate        string                 `json:"updated_date"`
	Status             string                 `json:"status"`
	Creator            string                 `json:"creator"`
	Endpoint           string                 `json:"endpoint"`
	UsageCount         int64                  `json:"usage_count"`
	LastUsed           *string                `json:"last_used"`
	PerformanceMetrics performanceMetrics     `json:"performance_metrics"`
	SystemPrompt       string                 `json:"system_prompt"`
	Instructions       string                 `json:"instructions"`
	UncertaintyThresh  float64                `json:"uncertainty_threshold"`
	Temperature        float64                `json:"temperature"`
	MaxToken           int                    `json:"max_token"`
	Demonstrations     []agentd.Demonstration `json:"demonstrations"`
	ConversationSaving bool                   `json:"conversation_saving_enabled"`
	Version            int                    `json:"version"`
	Tools              json.RawMessage        `json:"tools"`           // [] for none
	ResponseFormat     json.RawMessage        `json:"response_format"` // null for text
	Canary             *agentd.Canary         `json:"canary"`          // null for none
}

// performanceMetrics holds only what agentd measures; the rest is null, not invented.
type performanceMetrics struct {
	TotalRequests       int64    `json:"total_requests"`
	SuccessRate         *float64 `json:"success_rate"`
	AverageResponseTime *float64 `json:"average_response_time"` // milliseconds, of successful runs
	// P95ResponseTime (milliseconds) is the upper bound of the latency histogram's
	// bucket holding the 95th percentile of the successful runs of the last 30
	// days' rollups (agents.LatencyP95), on GET and listings; null without.
	P95ResponseTime       *float64 `json:"p95_response_time"`
	LastUsed              *string  `json:"last_used"`
	AverageUncertainty    *float64 `json:"average_uncertainty"`
	HumanInterventions    *int     `json:"human_interventions"`
	UserSatisfactionScore *float64 `json:"user_satisfaction_score"`
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func (s *Server) agentInfo(a *agentd.Agent) *agentInfo {
	info := &agentInfo{
		ID: a.ID, Name: a.Name, Description: a.Description,
		BaseModel: a.Version.Model, BaseModelName: a.Version.Model,
		CreatedDate: isoTime(a.CreatedAt), UpdatedDate: isoTime(a.UpdatedAt),
		Status: "ACTIVE", Creator: a.Creator,
		Endpoint:     s.PublicURL + "/api/v3/agents/run-agents/" + a.Name + "/run",
		UsageCount:   a.UsageCount,
		SystemPrompt: a.Version.Instructions, Instructions: a.Version.Instructions,
		UncertaintyThresh: a.Version.Temperature, Temperature: a.Version.Temperature,
		MaxToken: a.Version.MaxTokens, Demonstrations: a.Version.Demonstrations,
		ConversationSaving: a.ConversationSaving, Version: a.Version.Number,
		Tools: json.RawMessage("[]"), ResponseFormat: json.RawMessage("null"), Canary: a.Canary,
	}
	if a.Version.Tools != nil {
		info.Tools = a.Version.Tools
	}
	if a.Version.ResponseFormat != nil {
		info.ResponseFormat = a.Version.ResponseFormat
	}
	if m, err := s.Catalog.Model(a.Version.Model); err == nil && m.Name != "" {
		info.BaseModelName = m.Name
	}
	if info.Demonstrations == nil {
		info.Demonstrations = []agentd.Demonstration{}
	}
	if !a.Active {
		info.Status = "INACTIVE"
	}
	if a.LastUsed != nil {
		t := isoTime(*a.LastUsed)
		info.LastUsed = &t
	}
	pm := &info.PerformanceMetrics
	pm.LastUsed = info.LastUsed
	pm.TotalRequests = a.UsageCount + a.FailedCount
	if pm.TotalRequests > 0 {
		rate := float64(a.UsageCount) / float64(pm.TotalRequests)
		pm.SuccessRate = &rate
	}
	if a.UsageCount > 0 {
		avg := float64(a.TotalLatencyMS) / float64(a.UsageCount)
		pm.AverageResponseTime = &avg
	}
	return info
}

// decodeSpec reads the body of create and update.
func (s *Server) decodeSpec(w http.ResponseWriter, r *http.Request) (agents.Spec, error) {
	var req agentRequest
	if err := s.decode(w, r, &req); err != nil {
		return agents.Spec{}, err
	}
	return req.spec()
}

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	sp, err := s.decodeSpec(w, r)
	if err != nil {
		return err
	}
	a, err := s.Agents.Create(r.Context(), p, sp)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": s.agentInfo(a)})
}

// Pages of the agents listing.
const (
	// agentPage is how many agents a streamed listing reads at a time: with agents
	// of up to agents.max_bytes each, a listing holds at most this many in memory.
	agentPage = 8
	// refPage is how many agents' names /v1/models reads at a time.
	refPage          = 500
	defaultAgentPage = 50
	maxAgentPage     = 200
)

// listAgents is NuGen's GET /api/v3/agents. With limit or cursor it answers one
// page, {"agents": [...], "next_cursor"}; without them, as NuGen does, every agent,
// streamed a few at a time so that memory stays bounded however many there are.
func (s *Server) listAgents(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	incl, err := queryBool(r, "include_inactive")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Has("limit") || q.Has("cursor") {
		limit, err := pageLimit(r, defaultAgentPage, maxAgentPage)
		if err != nil {
			return err
		}
		list, next, err := s.Agents.Page(r.Context(), p, incl, q.Get("cursor"), limit)
		if err != nil {
			return err
		}
		out := make([]*agentInfo, len(list))
		for i, a := range list {
			if out[i], err = s.measuredAgentInfo(r.Context(), a); err != nil {
				return err
			}
		}
		return writeJSON(w, http.StatusOK, map[string]any{"agents": out, "next_cursor": nextCursor(next)})
	}
	// The first page is read before anything is written, so that its failure is
	// still an ordinary error response.
	list, next, err := s.Agents.Page(r.Context(), p, incl, "", agentPage)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	io.WriteString(w, `{"agents":[`)
	for first := true; ; {
		for _, a := range list {
			if !first {
				io.WriteString(w, ",")
			}
			first = false
			info, err := s.measuredAgentInfo(r.Context(), a)
			if err != nil {
				if r.Context().Err() != nil {
					return nil
				}
				s.Log.ErrorContext(r.Context(), "agent listing failed mid-stream", "org_id", p.OrgID, "err", err)
				panic(http.ErrAbortHandler)
			}
			if err := enc.Encode(info); err != nil {
				return nil // the client is gone
			}
		}
		if next == "" {
			break
		}
		if list, next, err = s.Agents.Page(r.Context(), p, incl, next, agentPage); err != nil {
			if r.Context().Err() != nil {
				return nil
			}
			// The status is sent: abort, so that the client sees a broken transfer
			// rather than a complete-looking list that lacks agents.
			s.Log.ErrorContext(r.Context(), "agent listing failed mid-stream", "org_id", p.OrgID, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	io.WriteString(w, "]}\n")
	return nil
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	a, err := s.Agents.Get(r.Context(), p, r.PathValue("agent_id"))
	if err != nil {
		return err
	}
	info, err := s.measuredAgentInfo(r.Context(), a)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": info})
}

func (s *Server) updateAgent(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	sp, err := s.decodeSpec(w, r)
	if err != nil {
		return err
	}
	a, err := s.Agents.Update(r.Context(), p, r.PathValue("agent_id"), sp)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"data": s.agentInfo(a)})
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	id, err := s.Agents.Delete(r.Context(), p, r.PathValue("agent_id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"agent_id": id, "message": "Successfully deleted agent " + id})
}

// modelInfo describes a catalog model.
type modelInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// ModelID, ModelName, InferenceReady and Type are the fields NuGen's own
	// clients read: the id and name again, whether it answers now (every catalog
	// model is served), and "chat" or "embedding".
	ModelID         string    `json:"model_id"`
	ModelName       string    `json:"model_name"`
	InferenceReady  bool      `json:"inference_ready"`
	Type            string    `json:"type"`
	BaseModel       string    `json:"base_model"`
	Description     string    `json:"description"`
	Provider        string    `json:"provider"`
	ContextWindow   int       `json:"context_window"`
	MaxOutputTokens int       `json:"max_output_tokens"`
	Price           modelCost `json:"price"`
	AlignmentReady  bool      `json:"alignment_ready"`
	// Tokenizer is how agentd counts this model's tokens for holds and trimming;
	// "estimate" means bills use the provider's counts.
	Tokenizer string   `json:"tokenizer"`
	Fallbacks []string `json:"fallbacks"`
}

// modelCost is in credits per million tokens.
type modelCost struct {
	Input  json.Number `json:"input"`
	Output json.Number `json:"output"`
}

func (s *Server) models() []modelInfo {
	out := []modelInfo{}
	for _, m := range s.Catalog.Models() {
		name := m.Name
		if name == "" {
			name = m.ID
		}
		desc := "served by provider " + m.ProviderName
		if m.ProviderName == "offline" {
			desc = "agentd's built-in offline model: answers from the agent's demonstrations; not an LLM"
		}
		fallbacks := []string{}
		for _, f := range m.Fallbacks {
			fallbacks = append(fallbacks, f.ID)
		}
		out = append(out, modelInfo{
			ID: m.ID, Name: name, ModelID: m.ID, ModelName: name, InferenceReady: true, Type: modelType(m),
			BaseModel: m.ID, Description: desc, Provider: m.ProviderName,
			Tokenizer: m.Tokenizer, Fallbacks: fallbacks,
			ContextWindow: m.ContextWindow, MaxOutputTokens: m.MaxOutputTokens,
			Price: modelCost{Input: json.Number(m.Price.InputPerM.String()), Output: json.Number(m.Price.OutputPerM.String())},
		})
	}
	return out
}

// modelType is a catalog model's type: "chat" or "embedding".
func modelType(m *catalog.Model) string {
	if m.Embedding {
		return "embedding"
	}
	return "chat"
}

func (s *Server) baseModels(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	return writeJSON(w, http.StatusOK, map[string]any{"models": s.models()})
}

func (s *Server) availableModels(w http.ResponseWriter, r *http.Request, p *agentd.Principal) error {
	type item struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		BaseModel string `json:"base_model"`
	}
	out := []item{}
	for _, m := range s.models() {
		out = append(out, item{ID: m.ID, Name: m.Name, BaseModel: m.BaseModel})
	}
	return writeJSON(w, http.StatusOK, out)
}
