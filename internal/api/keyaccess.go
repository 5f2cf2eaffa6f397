package api

import (
	"encoding/json"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/auth"
)

// keyAccess decodes a key's agents (a list of agent names; null or [] for every
// agent) and expires_at (RFC 3339; null for never) over cur: an absent field
// keeps its current value. auth normalizes and checks them (checkAccess).
func keyAccess(agents, expires json.RawMessage, cur auth.KeyAccess) (auth.KeyAccess, error) {
	a := cur
	if agents != nil {
		var names []string
		if err := json.Unmarshal(agents, &names); err != nil {
			return a, invalidField("agents must be a list of agent names, or null for every agent", "list_type", "agents")
		}
		a.Agents = names
	}
	if expires != nil {
		a.ExpiresAt = nil
		if string(expires) != "null" {
			var v string
			if err := json.Unmarshal(expires, &v); err != nil {
				return a, invalidField("expires_at must be an RFC 3339 time such as 2030-01-02T15:04:05Z, or null for never", "datetime_type", "expires_at")
			}
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return a, invalidField("expires_at must be an RFC 3339 time such as 2030-01-02T15:04:05Z, or null for never", "datetime_parsing", "expires_at")
			}
			a.ExpiresAt = &t
		}
	}
	return a, nil
}

func invalidField(msg, typ, field string) error {
	return agentd.Invalid(msg, typ, "body", field)
}

// rfc3339 is a time as keys show it: UTC, RFC 3339 with the fraction it has.
func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
