package run_test

import (
	"testing"

	"github.com/agentd/agentd/internal/run"
	"github.com/agentd/agentd/internal/run/inflighttest"
)

// TestMemoryInFlight runs the in-flight set's conformance suite on the in-memory
// set of a single node.
func TestMemoryInFlight(t *testing.T) {
	inflighttest.Run(t, func(t *testing.T) run.InFlight { return run.NewMemoryInFlight() })
}
