// Package inflighttest is the conformance suite of run.InFlight, the set of
// Idempotency-Keys whose run is in flight: every implementation (in memory on one
// node, a unique row across replicas) must pass Run.
package inflighttest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/run"
)

// Run runs the suite; newSet returns a fresh, empty set.
func Run(t *testing.T, newSet func(t *testing.T) run.InFlight) {
	ctx := context.Background()
	t.Run("BusyWhileInFlight", func(t *testing.T) {
		s := newSet(t)
		end, err := s.Begin(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Begin(ctx, "k")
		var e *agentd.Error
		if !errors.As(err, &e) || e.Code != agentd.EConflict || e.Fields["retry_after"] != 1 {
			t.Fatalf("a second Begin of a key in flight: %v, want conflict with retry_after 1", err)
		}
		end()
		again, err := s.Begin(ctx, "k")
		if err != nil {
			t.Fatalf("Begin after the first ended: %v", err)
		}
		again()
	})
	t.Run("KeysAreIndependent", func(t *testing.T) {
		s := newSet(t)
		var ends []func()
		for _, k := range []string{"a", "b", "a\x00b", "org\x00key\x00idem"} {
			end, err := s.Begin(ctx, k)
			if err != nil {
				t.Fatalf("Begin(%q) beside others: %v", k, err)
			}
			ends = append(ends, end)
		}
		for _, end := range ends {
			end()
		}
	})
	t.Run("EndTwice", func(t *testing.T) {
		s := newSet(t)
		first, err := s.Begin(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		first()
		second, err := s.Begin(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		first() // must not end the second run's mark
		if _, err := s.Begin(ctx, "k"); agentd.ErrorCode(err) != agentd.EConflict {
			t.Fatalf("a repeated end freed the next run's key: %v", err)
		}
		second()
	})
	t.Run("OneOfManyWins", func(t *testing.T) {
		// 50 rounds of 20 racing Begins of one key: exactly one is in flight at a
		// time, and every round one wins.
		s := newSet(t)
		for round := range 50 {
			key := fmt.Sprint("k", round)
			var won atomic.Int32
			var ends []func()
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					end, err := s.Begin(ctx, key)
					if err != nil {
						if agentd.ErrorCode(err) != agentd.EConflict {
							t.Error(err)
						}
						return
					}
					won.Add(1)
					mu.Lock()
					ends = append(ends, end)
					mu.Unlock()
				})
			}
			wg.Wait()
			if won.Load() != 1 {
				t.Fatalf("round %d: %d Begins won", round, won.Load())
			}
			for _, end := range ends {
				end()
			}
		}
	})
}
