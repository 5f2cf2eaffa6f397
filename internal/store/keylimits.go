package store

import (
	"context"
	"database/sql"

	"github.com/agentd/agentd"
)

// rateLimitColumns are a key's own rate limits (migration sqlite 0009, postgres
// 0011): NULL where the configured default applies.
const rateLimitColumns = `k.rate_rpm, k.rate_tpm, k.rate_concurrent`

// rateLimitsScan reads rateLimitColumns.
type rateLimitsScan struct{ rpm, tpm, concurrent sql.NullInt64 }

func (s *rateLimitsScan) limits() agentd.RateLimits {
	get := func(v sql.NullInt64) *int64 {
		if !v.Valid {
			return nil
		}
		return &v.Int64
	}
	return agentd.RateLimits{RPM: get(s.rpm), TPM: get(s.tpm), Concurrent: get(s.concurrent)}
}

// SetKeyRateLimits stores a key's own rate limits as auth decided them: each
// nil field is stored as NULL (the default applies). An unknown key is ENotFound.
func (t *Tx) SetKeyRateLimits(ctx context.Context, keyID string, l agentd.RateLimits) (err error) {
	defer wrap(&err, "store.SetKeyRateLimits(%q)", keyID)
	arg := func(v *int64) any {
		if v == nil {
			return nil
		}
		return *v
	}
	res, err := t.exec(ctx, `UPDATE api_keys SET rate_rpm = ?, rate_tpm = ?, rate_concurrent = ? WHERE id = ?`,
		arg(l.RPM), arg(l.TPM), arg(l.Concurrent), keyID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	return nil
}
