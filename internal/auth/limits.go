package auth

import (
	"context"
	"fmt"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/store"
)

// SetRateLimits sets key id's own rate limits to l, as p: a nil field is the
// configured default for keys, 0 is unlimited. Like a budget, a key's limits are
// set by a key above it (Manage with Limits): no key lifts its own limits or a
// peer's. A principal carries its key's limits, so the change evicts the key on
// every replica, as revocation does, and applies from the next request on.
func (s *Service) SetRateLimits(ctx context.Context, p *agentd.Principal, id string, l agentd.RateLimits) (*agentd.Key, error) {
	if err := CheckRateLimits(l); err != nil {
		return nil, err
	}
	k, err := s.Manage(ctx, p, id, Limits)
	if err != nil {
		return nil, err
	}
	e := agentd.AuditEntry{CreatedAt: s.clock.Now(), OrgID: k.OrgID, Action: agentd.AuditKeyUpdate,
		TargetType: agentd.TargetKey, TargetID: k.ID, Detail: agentd.AuditDetail(map[string]any{"rate_limits": map[string]any{
			"rpm": l.RPM, "tpm": l.TPM, "concurrent": l.Concurrent,
		}})}
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.SetKeyRateLimits(ctx, k.ID, l); err != nil {
			return err
		}
		if err := tx.Audit(ctx, e.By(p)); err != nil {
			return err
		}
		return s.changed(ctx, tx, k.ID)
	})
	if err != nil {
		return nil, err
	}
	k.RateLimits = l
	return k, nil
}

// CheckRateLimits refuses (EInvalid) a key's own rate limits out of range, as
// SetRateLimits does, so that a caller changing more than the limits can check
// them before it changes anything.
func CheckRateLimits(l agentd.RateLimits) error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"rpm", l.RPM}, {"tpm", l.TPM}, {"concurrent", l.Concurrent}} {
		if f.v != nil && (*f.v < 0 || *f.v > agentd.MaxRateLimit) {
			return agentd.Invalid(fmt.Sprintf("rate_limits.%s must be between 0 (unlimited) and %d, or null (the default)", f.name, int64(agentd.MaxRateLimit)),
				"greater_than_equal", "body", "rate_limits", f.name)
		}
	}
	return nil
}
