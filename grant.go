package agentd

import "time"

// CreditGrant is one change of an organization's balance other than a run's
// charge: a grant of credits, or (Amount negative) a correction.
type CreditGrant struct {
	ID      string
	OrgID   string
	Amount  Micros
	KeyID   string // the key that made it
	KeyName string // that key's name ("" if the key is gone)
	// CreatedAt is when it was made (UTC).
	CreatedAt time.Time
}
