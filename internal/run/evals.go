package run

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/evals"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/store"
)

// EvalRequest asks for an evaluation of one version of an agent.
type EvalRequest struct {
	Principal *agentd.Principal
	Agent     string // id or name
	Version   int
	// Cases are run after the version's demonstrations (unless NoDemonstrations).
	Cases            []evals.Case
	NoDemonstrations bool
}

// Eval runs the cases of an agent's version as real runs of the caller's key
// (held for, metered, ledgered and charged like any other), stores the report
// with the runs marked as an eval's, and records the version's eval status
// (passed only when every case passed) in the same transaction.
func (r *Runner) Eval(ctx context.Context, er *EvalRequest) (_ *evals.Report, err error) {
	p := er.Principal
	a, err := r.Agents.Lookup(ctx, p, er.Agent)
	if err != nil {
		return nil, err
	}
	v, err := r.DB.AgentVersion(ctx, p.OrgID, a.ID, er.Version)
	if err != nil {
		return nil, err
	}
	var cases []evals.Case
	if !er.NoDemonstrations {
		cases = evals.FromDemonstrations(v.Demonstrations)
	}
	cases = append(cases, er.Cases...)
	if len(cases) == 0 {
		return nil, agentd.Errorf(agentd.EInvalid, "version %d of agent %q has no demonstrations and no cases were sent: nothing to evaluate", er.Version, a.Name)
	}
	runOne := func(ctx context.Context, c *evals.Case) (*evals.Observation, error) {
		req := &Request{Principal: p, AgentName: a.Name, Version: er.Version, Messages: caseMessages(c)}
		res, err := r.Run(ctx, req)
		if err != nil {
			return nil, err
		}
		return &evals.Observation{RunID: res.RunID, Reply: res.Response, OutputTokens: res.Usage.OutputTokens,
			Cost: res.Cost, LatencyMS: res.LatencyMS}, nil
	}
	rep, err := evals.Run(ctx, cases, runOne, r.Clock.Now, nil)
	if err != nil {
		return nil, err
	}
	rep.ID, rep.Agent, rep.AgentID, rep.Version, rep.KeyID = agentd.NewID("eval"), a.Name, a.ID, er.Version, p.KeyID
	rec := &store.Eval{ID: rep.ID, OrgID: p.OrgID, AgentID: a.ID, Version: er.Version, Status: rep.Status,
		Passed: rep.Passed, Failed: rep.Failed, Cost: rep.Cost,
		StartedAt: rep.StartedAt.UnixMicro(), FinishedAt: rep.FinishedAt.UnixMicro(), KeyID: p.KeyID}
	if rec.Cases, err = json.Marshal(rep.Cases); err != nil {
		return nil, err
	}
	for _, c := range rep.Cases {
		if c.RunID != "" {
			rec.RunIDs = append(rec.RunIDs, c.RunID)
		}
	}
	err = r.DB.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertEval(ctx, rec); err != nil {
			return err
		}
		return tx.SetEvalStatus(ctx, a.ID, er.Version, rep.Status)
	})
	if err != nil {
		return nil, fmt.Errorf("store the evaluation of %s version %d: %w", a.Name, er.Version, err)
	}
	return rep, nil
}

// LatestEval is the newest stored evaluation of an agent's version.
func (r *Runner) LatestEval(ctx context.Context, p *agentd.Principal, agent string, version int) (*evals.Report, error) {
	a, err := r.Agents.Lookup(ctx, p, agent)
	if err != nil {
		return nil, err
	}
	e, err := r.DB.LatestEval(ctx, p.OrgID, a.ID, version)
	if err != nil {
		return nil, err
	}
	rep := &evals.Report{ID: e.ID, Agent: a.Name, AgentID: a.ID, Version: e.Version, Status: e.Status,
		Passed: e.Passed, Failed: e.Failed, Cost: e.Cost, KeyID: e.KeyID}
	rep.StartedAt, rep.FinishedAt = time.UnixMicro(e.StartedAt).UTC(), time.UnixMicro(e.FinishedAt).UTC()
	if err := json.Unmarshal(e.Cases, &rep.Cases); err != nil {
		return nil, fmt.Errorf("read evaluation %s: %w", e.ID, err)
	}
	return rep, nil
}

// caseMessages is a case's conversation as a chat's messages: its session's
// turns as written, then its input.
func caseMessages(c *evals.Case) []llm.Message {
	msgs := make([]llm.Message, 0, 2*len(c.Session)+1)
	for _, t := range c.Session {
		msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: t.User}, llm.Message{Role: llm.RoleAssistant, Content: t.Assistant})
	}
	return append(msgs, llm.Message{Role: llm.RoleUser, Content: c.Input})
}
