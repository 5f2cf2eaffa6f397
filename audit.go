package agentd

import (
	"encoding/json"
	"slices"
	"time"
)

// AuditEntry is one row of the audit trail: an administrative change, who made
// it, when and from where. The package that owns the change writes it in the
// change's own transaction, so that neither exists without the other.
type AuditEntry struct {
	ID        string
	CreatedAt time.Time
	// OrgID is the organization the change belongs to: the target's (a key's or an
	// agent's organization, the organization created or granted credits). An
	// organization's admins see its rows.
	OrgID string
	// ActorKeyID, ActorOwner and ActorOrgID are the key that made the change, its
	// owner and its organization; all "" for a change agentd made itself (the
	// bootstrap key and organization at start).
	ActorKeyID string
	ActorOwner string
	ActorOrgID string
	// ClientIP and RequestID say where the request came from (Principal.ClientIP
	// and Principal.RequestID); "" when unknown.
	ClientIP  string
	RequestID string
	Action    AuditAction
	// TargetType is "key", "org" or "agent"; TargetID the target's id.
	TargetType string
	TargetID   string
	// Detail is a JSON object: the fields changed, amounts, a new version number.
	// Never a key's secret or hash, never an agent's instructions (only the names
	// of the fields changed).
	Detail json.RawMessage
}

// AuditAction names what an administrative change did.
type AuditAction string

// Audit actions.
const (
	AuditKeyCreate       AuditAction = "key.create"
	AuditKeyRevoke       AuditAction = "key.revoke"
	AuditKeyUpdate       AuditAction = "key.update" // budget or budget period
	AuditOrgCreate       AuditAction = "org.create"
	AuditCreditsGrant    AuditAction = "credits.grant" // negative amounts too (corrections)
	AuditAgentCreate     AuditAction = "agent.create"
	AuditAgentUpdate     AuditAction = "agent.update"
	AuditAgentActivate   AuditAction = "agent.activate"   // an update that changed only the status, to ACTIVE
	AuditAgentDeactivate AuditAction = "agent.deactivate" // an update that changed only the status, to INACTIVE
	AuditAgentDelete     AuditAction = "agent.delete"
	// AuditAgentActivateVersion makes a stored version active (a rollback or a
	// promotion) without making a new one.
	AuditAgentActivateVersion AuditAction = "agent.activate_version"
)

// AuditActions lists every audit action.
var AuditActions = []AuditAction{
	AuditKeyCreate, AuditKeyRevoke, AuditKeyUpdate, AuditOrgCreate, AuditCreditsGrant,
	AuditAgentCreate, AuditAgentUpdate, AuditAgentActivate, AuditAgentDeactivate, AuditAgentDelete,
	AuditAgentActivateVersion,
}

// Valid reports whether a names an audit action.
func (a AuditAction) Valid() bool { return slices.Contains(AuditActions, a) }

// Audit target types.
const (
	TargetKey   = "key"
	TargetOrg   = "org"
	TargetAgent = "agent"
)

// By returns e as made by p: its actor and where its request came from. A nil p
// is agentd itself.
func (e AuditEntry) By(p *Principal) *AuditEntry {
	if p != nil {
		e.ActorKeyID, e.ActorOwner, e.ActorOrgID = p.KeyID, p.Owner, p.OrgID
		e.ClientIP, e.RequestID = p.ClientIP, p.RequestID
	}
	return &e
}

// AuditDetail encodes the detail of an audit entry: a JSON object of plain values
// (strings, numbers, Micros, booleans, lists of them).
func AuditDetail(fields map[string]any) json.RawMessage {
	if fields == nil {
		return json.RawMessage("{}")
	}
	b, err := json.Marshal(fields)
	if err != nil { // a value JSON cannot hold: keep the entry, say why its detail is missing
		b, _ = json.Marshal(map[string]string{"detail_error": err.Error()})
	}
	return b
}

// AuditFilter selects audit entries. Empty strings and zero times match
// everything.
type AuditFilter struct {
	// OrgID is the organization of the entries; "" for every organization.
	OrgID string
	// Action and ActorKeyID match exactly.
	Action     AuditAction
	ActorKeyID string
	// From (inclusive) and To (exclusive) bound CreatedAt.
	From, To time.Time
	// Cursor is a previous page's next cursor, "" for the first page.
	Cursor string
	// Limit is the page size: DefaultAuditPage when ≤ 0, at most MaxAuditPage.
	Limit int
}

// Audit page sizes.
const (
	DefaultAuditPage = 100
	MaxAuditPage     = 1000
)
