package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// accessColumns are a key's allow-list of agents and its expiry (migration
// sqlite 0012, postgres 0014).
const accessColumns = `k.agents, k.expires_at`

// accessScan reads accessColumns.
type accessScan struct {
	agents  string
	expires sql.NullInt64
}

func (a *accessScan) agentList() []string { return strings.Fields(a.agents) }

func expiresArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return micros(*t)
}

// SetKeyAccess stores a key's allow-list of agents (normalized names; empty for
// every agent) and its expiry (nil: never) as auth decided them. An unknown key
// is ENotFound.
func (t *Tx) SetKeyAccess(ctx context.Context, keyID string, agents []string, expires *time.Time) (err error) {
	defer wrap(&err, "store.SetKeyAccess(%q)", keyID)
	res, err := t.exec(ctx, `UPDATE api_keys SET agents = ?, expires_at = ? WHERE id = ?`,
		strings.Join(agents, " "), expiresArg(expires), keyID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return agentd.Errorf(agentd.ENotFound, "key %q not found", keyID)
	}
	return nil
}
