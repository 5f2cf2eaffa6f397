package agents

import (
	"context"
	"time"

	"github.com/agentd/agentd/internal/store"
)

// LatencyWindow is how far back LatencyP95 reads an agent's rollups.
const LatencyWindow = store.DefaultLatencyDays * 24 * time.Hour

// LatencyP95 is the 95th percentile of the latency in milliseconds of agentID's
// successful runs of the UTC days from LatencyWindow ago to today, read from the
// latency histograms of the daily rollups (store.DB.AgentLatencyHist): the upper
// bound of the bucket (store.LatencyBounds) that holds the nearest-rank 95th
// percentile, or the last bound when it is the open bucket above it. nil when
// there were none. The rollups are never pruned, so it counts every run of the
// window whatever the ledger's retention.
func (s *Service) LatencyP95(ctx context.Context, orgID, agentID string) (*float64, error) {
	from := s.clock.Now().UTC().Add(-LatencyWindow).Format(time.DateOnly)
	h, err := s.db.AgentLatencyHist(ctx, orgID, agentID, from)
	if err != nil {
		return nil, err
	}
	v, ok := histPercentile(h, 95)
	if !ok {
		return nil, nil
	}
	f := float64(v)
	return &f, nil
}

// histPercentile is the upper bound of the bucket of h holding the nearest-rank
// pct-th percentile (the last bound for the open bucket); false for an empty h.
func histPercentile(h store.LatencyHist, pct int64) (int64, bool) {
	var n int64
	for _, c := range h {
		n += c
	}
	if n == 0 {
		return 0, false
	}
	rank := max((pct*n+99)/100, 1) // ceil(pct% of n), in integers
	var seen int64
	for i, c := range h {
		seen += c
		if seen >= rank {
			return store.LatencyBounds[min(i, len(store.LatencyBounds)-1)], true
		}
	}
	return store.LatencyBounds[len(store.LatencyBounds)-1], true
}
