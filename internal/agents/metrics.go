package agents

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/agentd/agentd/internal/store"
)

// LatencyWindow is how far back LatencyP95 reads an agent's runs.
const LatencyWindow = store.DefaultLatencyDays * 24 * time.Hour

// LatencyP95 is the 95th percentile (nearest rank) of the latency in
// milliseconds of agentID's successful runs of the last LatencyWindow, at most
// the newest store.MaxLatencyRuns of them, read from the ledger (one bounded
// index range); nil when there were none. Rows that retention pruned are not
// counted: it measures what the ledger holds, and never invents a value.
func (s *Service) LatencyP95(ctx context.Context, agentID string) (*float64, error) {
	lat, err := s.db.AgentLatencies(ctx, agentID, s.clock.Now().Add(-LatencyWindow))
	if err != nil || len(lat) == 0 {
		return nil, err
	}
	v := float64(percentile(lat, 0.95))
	return &v, nil
}

// percentile is the nearest-rank q-th percentile of v (sorted in place).
func percentile(v []int64, q float64) int64 {
	slices.Sort(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[max(i, 0)]
}
