package run

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// Idempotency-Key: a run asked with a key is executed at most once per (org, API
// key, Idempotency-Key) while its record lives. The record is written in the run's
// own transaction, so a 200 and its record exist together or not at all. While the
// first request is in flight, others with the same key get 409 conflict with
// Retry-After; afterwards they get the stored result, with no new charge. Failed
// runs store nothing (they charged nothing), so a retry runs again.
//
// The in-flight set is the seam InFlight: in memory on a single node, like holds
// and leases; a unique row across replicas.

// DefaultIdemTTL is how long results are kept when Runner.IdemTTL is 0.
const DefaultIdemTTL = 24 * time.Hour

// InFlight is the set of Idempotency-Keys whose run is in flight. Every
// implementation passes inflighttest.Run.
type InFlight interface {
	// Begin marks id in flight, or fails with EConflict (retry_after 1) when it
	// already is. end removes the mark; it must be called once.
	Begin(ctx context.Context, id string) (end func(), err error)
}

// MemoryInFlight is InFlight in memory, for a single node: a crash forgets every
// mark along with the runs it guarded.
type MemoryInFlight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

var _ InFlight = (*MemoryInFlight)(nil)

// NewMemoryInFlight returns an empty in-flight set.
func NewMemoryInFlight() *MemoryInFlight { return &MemoryInFlight{keys: map[string]struct{}{}} }

var errInFlight = &agentd.Error{Code: agentd.EConflict,
	Message: "a request with this Idempotency-Key is still in flight; retry when it has finished",
	Fields:  map[string]any{"retry_after": 1}}

// Begin implements InFlight.
func (s *MemoryInFlight) Begin(ctx context.Context, id string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.keys[id]; busy {
		return nil, errInFlight
	}
	s.keys[id] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.keys, id)
			s.mu.Unlock()
		})
	}, nil
}

func (r *Runner) idemTTL() time.Duration {
	if r.IdemTTL > 0 {
		return r.IdemTTL
	}
	return DefaultIdemTTL
}

// requestHash identifies what a run asks, so a key reused for another request is
// refused rather than answered with the wrong result.
func requestHash(req *Request) string {
	if req.RequestHash != "" {
		return req.RequestHash
	}
	h := sha256.New()
	for _, part := range []string{req.AgentName, req.SessionID, req.Message} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	if req.Version > 0 { // a pinned version is another request (unpinned hashes stay as they were)
		h.Write([]byte("version\x00" + strconv.Itoa(req.Version)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// beginIdempotent returns the stored result of a finished run with req's key, or
// marks the key in flight and returns the record to write with the run and the
// function that ends the in-flight mark (after the run's write).
func (r *Runner) beginIdempotent(ctx context.Context, req *Request) (stored *Result, rec *store.Idem, done func(), err error) {
	p := req.Principal
	hash := requestHash(req)
	id := p.OrgID + "\x00" + p.KeyID + "\x00" + req.IdempotencyKey
	done, err = r.InFlight.Begin(ctx, id)
	if err != nil {
		return nil, nil, nil, err
	}
	// Checked after marking the key, so a run that finishes meanwhile has written
	// its record before we look.
	old, err := r.DB.Idempotent(ctx, p.OrgID, p.KeyID, req.IdempotencyKey, r.Clock.Now().UnixMicro())
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	if old != nil {
		done()
		if old.RequestHash != hash {
			return nil, nil, nil, agentd.Errorf(agentd.EBadRequest,
				"this Idempotency-Key was used for a different request; use a new key for a new request")
		}
		var res Result
		if err := json.Unmarshal(old.Result, &res); err != nil {
			return nil, nil, nil, err
		}
		res.Replayed = true
		return &res, nil, nil, nil
	}
	return nil, &store.Idem{OrgID: p.OrgID, KeyID: p.KeyID, Key: req.IdempotencyKey, RequestHash: hash}, done, nil
}
