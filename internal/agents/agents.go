// Package agents manages stored agents: validation of their configuration, name
// normalization and uniqueness, versions, and the cache that serves runs.
package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/catalog"
	"github.com/agentd/agentd/internal/clock"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/prompt"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/toolspec"
)

// Spec is a create or update request. Nil fields are absent: defaults on create,
// unchanged on update.
type Spec struct {
	Name               *string
	Description        *string
	Model              *string
	MaxTokens          *int
	Temperature        *float64
	Instructions       *string
	Demonstrations     *[]agentd.Demonstration
	Status             *string // ACTIVE or INACTIVE, any case
	ConversationSaving *bool
	// Tools and ResponseFormat are OpenAI's JSON; "null" or "[]" (tools)
	// removes them.
	Tools          json.RawMessage
	ResponseFormat json.RawMessage
	// Note is stored with the version the change makes (versions.go).
	Note *string
	// Canary sets the agent's canary; RemoveCanary removes it.
	Canary       *agentd.Canary
	RemoveCanary bool
}

// Limits on agent configuration.
const (
	MaxDescriptionChars  = 4000
	MaxInstructionsChars = 200_000
	MaxDemonstrations    = 200
	MaxDemoChars         = 20_000
)

// Compiled is an agent ready to run: its active version with the model resolved and
// the fixed part of its prompt counted once.
type Compiled struct {
	Agent *agentd.Agent
	Model *catalog.Model
	Fixed *prompt.Fixed
	// Tools and Format are the version's tools and response format, read.
	Tools  []llm.Tool
	Format *llm.ResponseFormat
}

// Options bound what an organization may store.
type Options struct {
	// MaxPerOrg is how many agents an organization may have (DefaultMaxPerOrg when 0).
	MaxPerOrg int
	// MaxBytes bounds one agent's configuration: the bytes of its description,
	// instructions and demonstrations (DefaultMaxBytes when 0).
	MaxBytes int
	// Reserved are names no agent may take, because a route claims them in the
	// place of an agent's name or id (api.ReservedAgentNames).
	Reserved []string
	// CacheTTL bounds how long a compiled agent is served without reading the agent
	// again: the safety net for a change whose notification never arrived (a
	// listener whose connection died silently). 0 means DefaultCacheTTL on
	// PostgreSQL and no expiry on SQLite, where the one process that owns the file
	// makes every change and evicts exactly.
	CacheTTL time.Duration
}

// Defaults of Options.
const (
	DefaultMaxPerOrg = 1000
	DefaultMaxBytes  = 1 << 20
	// DefaultCacheTTL costs a replica one read per agent in use every 5 s: an
	// expired agent whose version did not change keeps its counted prompt.
	DefaultCacheTTL = 5 * time.Second
)

// agentTopic is the notification of a change to an organization's agents; its
// payload is the organization's id.
const agentTopic = "agent"

// Service manages agents.
type Service struct {
	db    *store.DB
	cat   *catalog.Catalog
	clock clock.Clock
	opts  Options

	ttl time.Duration // 0: entries live until evicted

	mu    sync.RWMutex
	gen   uint64                         // bumped on every eviction, so a load racing a change is not cached
	cache map[string]map[cacheKey]cached // org id → name and version → compiled agent

	stats cacheStats // resolutions served from the cache, and read from the database
}

type cached struct {
	c       *Compiled
	expires time.Time // zero without a TTL
}

// New returns a Service. Its cache follows the agents' changes on every replica
// (notifications) for the life of db.
func New(db *store.DB, cat *catalog.Catalog, clk clock.Clock, o Options) *Service {
	if o.MaxPerOrg <= 0 {
		o.MaxPerOrg = DefaultMaxPerOrg
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.CacheTTL <= 0 && db.Dialect() == "postgres" {
		o.CacheTTL = DefaultCacheTTL
	}
	s := &Service{db: db, cat: cat, clock: clk, opts: o, ttl: max(o.CacheTTL, 0), cache: map[string]map[cacheKey]cached{}}
	db.Subscribe(agentTopic, s.invalidate)
	return s
}

// changed makes every replica forget org's compiled agents once tx commits. Every
// change to an agent calls it in its transaction; the caller also invalidates at
// once, so that the change holds on this replica from the moment it returns (its
// own notification comes back later, through the database).
func changed(ctx context.Context, tx *store.Tx, orgID string) error {
	return tx.Notify(ctx, agentTopic, orgID)
}

func (s *Service) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }

// Create validates spec and stores a new agent of p's organization.
func (s *Service) Create(ctx context.Context, p *agentd.Principal, spec Spec) (*agentd.Agent, error) {
	now := s.now()
	a := &agentd.Agent{
		ID: agentd.NewID("agent"), OrgID: p.OrgID, Active: true, Creator: p.Owner,
		CreatedAt: now, UpdatedAt: now, ConversationSaving: true,
		Version: agentd.Version{
			Instructions: agentd.DefaultInstructions, Temperature: agentd.DefaultTemperature,
			MaxTokens: agentd.DefaultMaxTokens, CreatedAt: now,
		},
	}
	var errs violations
	if spec.Name == nil {
		errs.add("Field required", "missing", "agent_name")
	}
	if spec.Description == nil {
		errs.add("Field required", "missing", "agent_description")
	}
	if spec.Model == nil {
		errs.add("Field required", "missing", "model")
	}
	a.Version.AuthorKeyID = p.KeyID
	if spec.Note != nil {
		a.Version.Note = *spec.Note
	}
	if err := s.apply(a, spec, &errs); err != nil {
		return nil, err
	}
	if err := p.CheckAgent(a.Name); err != nil && a.Name != "" {
		return nil, err // a key limited to agents creates or renames only within them
	}
	if spec.Canary != nil {
		return nil, agentd.Invalid("canary needs a version other than the active one; a new agent has only version 1", "value_error", "body", "canary", "version")
	}
	// Counted in the transaction that inserts, so concurrent creates cannot pass
	// the limit together.
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		n, err := tx.CountAgents(ctx, a.OrgID)
		if err != nil {
			return err
		}
		if n >= s.opts.MaxPerOrg {
			return agentd.Errorf(agentd.EBadRequest, "this organization has %d agents, the most it may have (agents.max_per_org); delete one first", n)
		}
		if err := tx.CreateAgent(ctx, a); err != nil {
			return err
		}
		if err := tx.Audit(ctx, auditCreated(a).By(p)); err != nil {
			return err
		}
		return changed(ctx, tx, a.OrgID)
	})
	if err != nil {
		return nil, err
	}
	s.invalidate(a.OrgID)
	return a, nil
}

// apply validates spec and copies it onto a. It returns the violations as one
// EInvalid error, or EModelUnavailable for a model outside the catalog.
func (s *Service) apply(a *agentd.Agent, spec Spec, errs *violations) error {
	if spec.Name != nil {
		name := agentd.NormalizeName(*spec.Name)
		switch {
		case name == "":
			errs.add("agent_name must contain at least one letter or digit", "value_error", "agent_name")
		case len(name) > agentd.MaxNameLen:
			errs.add(fmt.Sprintf("agent_name normalizes to %d characters; at most %d are allowed", len(name), agentd.MaxNameLen), "value_error", "agent_name")
		case slices.Contains(s.opts.Reserved, name):
			errs.add(fmt.Sprintf("agent_name %q is reserved: the API's route /api/v3/agents/%s means something else", name, name), "value_error", "agent_name")
		}
		a.Name = name
	}
	if spec.Description != nil {
		if utf8.RuneCountInString(*spec.Description) > MaxDescriptionChars {
			errs.add(fmt.Sprintf("agent_description is longer than %d characters", MaxDescriptionChars), "value_error", "agent_description")
		}
		a.Description = *spec.Description
	}
	if spec.Instructions != nil {
		if utf8.RuneCountInString(*spec.Instructions) > MaxInstructionsChars {
			errs.add(fmt.Sprintf("instructions are longer than %d characters", MaxInstructionsChars), "value_error", "instructions")
		}
		a.Version.Instructions = *spec.Instructions
	}
	if spec.Temperature != nil {
		t := *spec.Temperature
		if math.IsNaN(t) || t < 0 || t > 2 {
			errs.add("temperature must be between 0 and 2", "value_error", "temperature")
		}
		a.Version.Temperature = t
	}
	if spec.Demonstrations != nil {
		demos := *spec.Demonstrations
		if len(demos) > MaxDemonstrations {
			errs.add(fmt.Sprintf("at most %d demonstrations are allowed", MaxDemonstrations), "value_error", "demonstrations")
		}
		for i, d := range demos {
			if strings.TrimSpace(d.Input) == "" || strings.TrimSpace(d.Output) == "" {
				errs.add("a demonstration needs a non-empty input and output", "value_error", "demonstrations", i)
			}
			if utf8.RuneCountInString(d.Input)+utf8.RuneCountInString(d.Output) > MaxDemoChars {
				errs.add(fmt.Sprintf("a demonstration is longer than %d characters", MaxDemoChars), "value_error", "demonstrations", i)
			}
		}
		a.Version.Demonstrations = demos
	}
	tools, format := s.applyTools(a, spec, errs)
	if spec.Status != nil {
		switch strings.ToUpper(*spec.Status) {
		case "ACTIVE":
			a.Active = true
		case "INACTIVE":
			a.Active = false
		default:
			errs.add("status must be ACTIVE or INACTIVE", "enum", "status")
		}
	}
	if spec.ConversationSaving != nil {
		a.ConversationSaving = *spec.ConversationSaving
	}
	if spec.Model != nil {
		a.Version.Model = *spec.Model
	}
	if spec.MaxTokens != nil {
		a.Version.MaxTokens = *spec.MaxTokens
	}
	var m *catalog.Model
	if strings.TrimSpace(a.Version.Model) == "" {
		if spec.Model != nil {
			errs.add("model must name a model of the catalog (GET /api/v3/models/base lists them)", "value_error", "model")
		}
	} else {
		var err error
		if m, err = s.cat.Model(a.Version.Model); err != nil && len(errs.list) == 0 {
			return err
		}
		if m != nil && m.Embedding {
			errs.add(fmt.Sprintf("model %q is an embedding model; an agent needs a chat model (GET /api/v3/models/base lists them)", m.ID), "value_error", "model")
			m = nil
		}
	}
	if size := a.Size(); size > s.opts.MaxBytes {
		errs.add(fmt.Sprintf("the agent's description, instructions and demonstrations take %d bytes; at most %d are allowed (agents.max_bytes)", size, s.opts.MaxBytes), "value_error")
	}
	if m != nil && (len(tools) > 0 || format != nil) {
		req := &llm.Request{Tools: tools, ResponseFormat: format}
		for _, f := range m.Chain() {
			c, ok := f.Provider.(llm.ParamChecker)
			if !ok {
				continue
			}
			var pe *llm.ParamError
			if err := c.CheckRequest(req); errors.As(err, &pe) {
				errs.add(fmt.Sprintf("%s (model %s, provider %s)", pe.Error(), f.ID, f.ProviderName), "unsupported_parameter", pe.Param)
			}
		}
	}
	mt := a.Version.MaxTokens
	switch {
	case mt <= 0:
		errs.add("max_token must be greater than 0", "greater_than", "max_token")
	case m != nil && mt > m.MaxOutputTokens:
		errs.add(fmt.Sprintf("max_token %d is above the limit of model %q (%d)", mt, m.ID, m.MaxOutputTokens), "less_than_equal", "max_token")
	}
	return errs.err()
}

// Update applies spec to the agent of p's organization named by idOrName (id or
// normalized name). Configuration changes make a new version.
func (s *Service) Update(ctx context.Context, p *agentd.Principal, idOrName string, spec Spec) (*agentd.Agent, error) {
	a, err := s.loadFor(ctx, p, idOrName, true)
	if err != nil {
		return nil, err
	}
	old := *a
	before := a.Version
	var errs violations
	if err := s.apply(a, spec, &errs); err != nil {
		return nil, err
	}
	if err := p.CheckAgent(a.Name); err != nil && a.Name != "" {
		return nil, err // a key limited to agents creates or renames only within them
	}
	newVersion := configChanged(spec)
	if spec.Note != nil && !newVersion {
		return nil, agentd.Invalid("note is stored with the version a change makes; this change makes none (it changes no configuration field)", "value_error", "body", "note")
	}
	now := s.now()
	a.UpdatedAt = now
	if newVersion {
		a.Version.CreatedAt = now
		a.Version.Note, a.Version.AuthorKeyID, a.Version.EvalStatus = "", p.KeyID, ""
		if spec.Note != nil {
			a.Version.Note = *spec.Note
		}
	} else {
		a.Version = before
	}
	switch {
	case spec.RemoveCanary:
		a.Canary = nil
	case spec.Canary != nil:
		a.Canary = spec.Canary
	}
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := checkCanary(ctx, tx, a, spec.Canary != nil); err != nil {
			return err
		}
		if err := tx.UpdateAgent(ctx, a, newVersion); err != nil {
			return err
		}
		if err := tx.Audit(ctx, auditUpdated(&old, a, newVersion).By(p)); err != nil {
			return err
		}
		return changed(ctx, tx, a.OrgID)
	}); err != nil {
		return nil, err
	}
	s.invalidate(a.OrgID)
	return a, nil
}

// Delete removes the agent of p's organization named by idOrName.
func (s *Service) Delete(ctx context.Context, p *agentd.Principal, idOrName string) (string, error) {
	a, err := s.loadFor(ctx, p, idOrName, true)
	if err != nil {
		return "", err
	}
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.DeleteAgent(ctx, p.OrgID, a.ID); err != nil {
			return err
		}
		if err := tx.Audit(ctx, auditDeleted(a, s.now()).By(p)); err != nil {
			return err
		}
		return changed(ctx, tx, p.OrgID)
	}); err != nil {
		return "", err
	}
	s.invalidate(p.OrgID)
	return a.ID, nil
}

// Get returns an active agent of p's organization by id or normalized name; an
// inactive one is not found, as in NuGen.
func (s *Service) Get(ctx context.Context, p *agentd.Principal, idOrName string) (*agentd.Agent, error) {
	return s.loadFor(ctx, p, idOrName, false)
}

// Page returns up to limit agents of p's organization in creation order after
// cursor ("" for the first page), and the next page's cursor ("" after the last).
func (s *Service) Page(ctx context.Context, p *agentd.Principal, includeInactive bool, cursor string, limit int) ([]*agentd.Agent, string, error) {
	return s.db.AgentsPage(ctx, p.OrgID, includeInactive, cursor, limit, p.Agents...) // a key's allow-list filters
}

// Refs is Page without the agents' configuration: ids, names and models.
func (s *Service) Refs(ctx context.Context, p *agentd.Principal, includeInactive bool, cursor string, limit int) ([]agentd.AgentRef, string, error) {
	return s.db.AgentRefs(ctx, p.OrgID, includeInactive, cursor, limit, p.Agents...) // a key's allow-list filters
}

// Lookup returns an agent of p's organization by id or normalized name, active or
// not.
func (s *Service) Lookup(ctx context.Context, p *agentd.Principal, idOrName string) (*agentd.Agent, error) {
	return s.loadFor(ctx, p, idOrName, true)
}

func (s *Service) load(ctx context.Context, orgID, idOrName string, includeInactive bool) (*agentd.Agent, error) {
	var a *agentd.Agent
	var err error
	if strings.HasPrefix(idOrName, "agent-") {
		a, err = s.db.Agent(ctx, orgID, idOrName)
	} else {
		a, err = s.db.AgentByName(ctx, orgID, idOrName)
	}
	if err != nil {
		return nil, err
	}
	if !a.Active && !includeInactive {
		return nil, agentd.Errorf(agentd.ENotFound, "agent %q not found", idOrName)
	}
	return a, nil
}

// Resolve returns the active agent of org with the normalized name, compiled for a
// run. It is served from a cache that every change invalidates, on every replica.
func (s *Service) Resolve(ctx context.Context, orgID, name string) (*Compiled, error) {
	return s.resolve(ctx, orgID, name, 0)
}

// resolve is Resolve of version (0: the active one) of the active agent.
func (s *Service) resolve(ctx context.Context, orgID, name string, version int) (*Compiled, error) {
	key := cacheKey{name: name, version: version}
	var now time.Time
	if s.ttl > 0 {
		now = s.clock.Now()
	}
	s.mu.RLock()
	e, hit := s.cache[orgID][key]
	gen := s.gen
	s.mu.RUnlock()
	if hit && (s.ttl == 0 || now.Before(e.expires)) {
		s.stats.hit()
		return e.c, nil
	}
	s.stats.miss()
	a, err := s.db.AgentByName(ctx, orgID, name)
	if agentd.ErrorCode(err) == agentd.ENotFound || (err == nil && !a.Active) {
		if hit { // expired, and gone or inactive since
			s.mu.Lock()
			delete(s.cache[orgID], key)
			s.mu.Unlock()
		}
		return nil, s.notFound(ctx, orgID, name)
	}
	if err != nil {
		return nil, err
	}
	if version != 0 && version != a.Version.Number {
		v, err := s.db.AgentVersion(ctx, orgID, a.ID, version)
		if agentd.ErrorCode(err) == agentd.ENotFound {
			return nil, agentd.Errorf(agentd.ENotFound, "agent %q has no version %d (GET /api/v3/agents/%s/versions lists them)", name, version, name)
		}
		if err != nil {
			return nil, err
		}
		a.Version = *v
	}
	m, err := s.cat.Model(a.Version.Model)
	if err != nil {
		// The catalog changed since the agent was stored.
		return nil, agentd.Errorf(agentd.EModelUnavailable, "agent %q uses model %q, which is no longer in the catalog", name, a.Version.Model)
	}
	var fixed *prompt.Fixed
	if hit && e.c.Agent.ID == a.ID && e.c.Agent.Version.Number == a.Version.Number {
		fixed = e.c.Fixed // expired, but versions never change: the same prompt, already counted
	} else {
		fixed = prompt.Compile(a.Version.Instructions, a.Version.Demonstrations, m.Count)
	}
	c := &Compiled{Agent: a, Model: m, Fixed: fixed}
	if c.Tools, c.Format, err = compileTools(&a.Version); err != nil {
		return nil, err
	}
	e = cached{c: c}
	if s.ttl > 0 {
		e.expires = now.Add(s.ttl) // from before the read: never later than the data's age allows
	}
	s.mu.Lock()
	if s.gen == gen {
		if s.cache[orgID] == nil {
			s.cache[orgID] = map[cacheKey]cached{}
		}
		s.cache[orgID][key] = e
	}
	s.mu.Unlock()
	return c, nil
}

// notFound builds the 404 of a run, with a hint when the caller used a display name
// instead of the normalized one.
func (s *Service) notFound(ctx context.Context, orgID, name string) error {
	if n := agentd.NormalizeName(name); n != name && n != "" {
		if a, err := s.db.AgentByName(ctx, orgID, n); err == nil && a.Active {
			return agentd.Errorf(agentd.ENotFound, "agent %q not found; run URLs use the normalized name: did you mean %q?", name, n)
		}
	}
	return agentd.Errorf(agentd.ENotFound, "agent %q not found or not active", name)
}

// ForgetAll drops every compiled agent, so that each agent's next run finds its
// model in the catalog again: after the catalog was reloaded.
func (s *Service) ForgetAll() { s.invalidate("") }

// invalidate forgets the compiled agents of orgID, or of every organization for ""
// (notifications may have been missed). Notifications call it on the listener's
// goroutine: it only takes the lock, which no one holds across a read.
func (s *Service) invalidate(orgID string) {
	s.mu.Lock()
	s.gen++
	if orgID == "" {
		clear(s.cache)
	} else {
		delete(s.cache, orgID)
	}
	s.mu.Unlock()
}

// violations collects validation failures in FastAPI's shape.
type violations struct{ list []agentd.Violation }

func (v *violations) add(msg, typ string, loc ...any) {
	v.list = append(v.list, agentd.Violation{Loc: append([]any{"body"}, loc...), Msg: msg, Type: typ})
}

// from adds the violations of err, an EInvalid *agentd.Error whose locations
// are within the body.
func (v *violations) from(err error) {
	var e *agentd.Error
	if !errors.As(err, &e) || len(e.Violations) == 0 {
		v.add(err.Error(), "value_error")
		return
	}
	for _, x := range e.Violations {
		v.add(x.Msg, x.Type, x.Loc...)
	}
}

func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	return &agentd.Error{Code: agentd.EInvalid, Violations: v.list}
}

// applyTools sets the tools and response format spec gives on a's version and
// returns them read (nil when a has none), adding what is wrong to errs.
func (s *Service) applyTools(a *agentd.Agent, spec Spec, errs *violations) ([]llm.Tool, *llm.ResponseFormat) {
	absent := func(raw json.RawMessage) bool {
		raw = bytes.TrimSpace(raw)
		return len(raw) == 0 || string(raw) == "null"
	}
	if spec.Tools != nil {
		a.Version.Tools = nil
		if t := bytes.TrimSpace(spec.Tools); !absent(t) && string(t) != "[]" {
			a.Version.Tools = compactJSON(t)
		}
	}
	if spec.ResponseFormat != nil {
		a.Version.ResponseFormat = nil
		if !absent(spec.ResponseFormat) {
			a.Version.ResponseFormat = compactJSON(spec.ResponseFormat)
		}
	}
	var tools []llm.Tool
	var format *llm.ResponseFormat
	var err error
	if a.Version.Tools != nil {
		if tools, err = toolspec.Tools(a.Version.Tools, "tools"); err != nil {
			errs.from(err)
		}
	}
	if a.Version.ResponseFormat != nil {
		if format, err = toolspec.Format(a.Version.ResponseFormat, "response_format"); err != nil {
			errs.from(err)
		} else if format == nil {
			a.Version.ResponseFormat = nil // text: what every model gives unasked
		}
	}
	return tools, format
}

// compileTools reads a stored version's tools and response format.
func compileTools(v *agentd.Version) ([]llm.Tool, *llm.ResponseFormat, error) {
	var tools []llm.Tool
	var format *llm.ResponseFormat
	var err error
	if v.Tools != nil {
		if tools, err = toolspec.Tools(v.Tools, "tools"); err != nil {
			return nil, nil, fmt.Errorf("agents: stored tools of version %d: %w", v.Number, err)
		}
	}
	if v.ResponseFormat != nil {
		if format, err = toolspec.Format(v.ResponseFormat, "response_format"); err != nil {
			return nil, nil, fmt.Errorf("agents: stored response format of version %d: %w", v.Number, err)
		}
	}
	return tools, format, nil
}

// compactJSON is raw without insignificant space, or raw itself when it is not
// JSON (the reader then says what is wrong with it).
func compactJSON(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return bytes.Clone(raw)
	}
	return b.Bytes()
}
