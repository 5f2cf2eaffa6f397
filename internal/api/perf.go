package api

import (
	"context"

	"github.com/agentd/agentd"
)

// measuredAgentInfo is agentInfo with the measurements that need a read of the
// rollups: the p95 latency of performance_metrics (agents.Service.LatencyP95).
func (s *Server) measuredAgentInfo(ctx context.Context, a *agentd.Agent) (*agentInfo, error) {
	info := s.agentInfo(a)
	p95, err := s.Agents.LatencyP95(ctx, a.OrgID, a.ID)
	if err != nil {
		return nil, err
	}
	info.PerformanceMetrics.P95ResponseTime = p95
	return info, nil
}
