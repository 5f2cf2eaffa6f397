package agents

import (
	"bytes"
	"slices"
	"time"

	"github.com/agentd/agentd"
)

// Every change to an agent is audited in its own transaction: what changed by
// the API's field names, never the instructions or demonstrations themselves.

func statusName(a *agentd.Agent) string {
	if a.Active {
		return "ACTIVE"
	}
	return "INACTIVE"
}

// auditCreated is the audit entry of a's creation.
func auditCreated(a *agentd.Agent) agentd.AuditEntry {
	return agentd.AuditEntry{CreatedAt: a.CreatedAt, OrgID: a.OrgID, Action: agentd.AuditAgentCreate,
		TargetType: agentd.TargetAgent, TargetID: a.ID, Detail: agentd.AuditDetail(map[string]any{
			"name": a.Name, "model": a.Version.Model, "version": a.Version.Number, "status": statusName(a),
		})}
}

// auditUpdated is the audit entry of the update of old to a; newVersion says whether
// it made a.Version. An update that changed only the status is an activation or a
// deactivation.
func auditUpdated(old, a *agentd.Agent, newVersion bool) agentd.AuditEntry {
	changes := changedFields(old, a)
	detail := map[string]any{"name": a.Name, "changed": changes}
	if old.Name != a.Name {
		detail["previous_name"] = old.Name
	}
	if old.Active != a.Active {
		detail["status"] = statusName(a)
	}
	if newVersion {
		detail["version"] = a.Version.Number
	}
	action := agentd.AuditAgentUpdate
	if slices.Equal(changes, []string{"status"}) && !newVersion {
		action = agentd.AuditAgentDeactivate
		if a.Active {
			action = agentd.AuditAgentActivate
		}
	}
	return agentd.AuditEntry{CreatedAt: a.UpdatedAt, OrgID: a.OrgID, Action: action,
		TargetType: agentd.TargetAgent, TargetID: a.ID, Detail: agentd.AuditDetail(detail)}
}

// changedFields names, as the API does, the fields whose value differs between
// old and a.
func changedFields(old, a *agentd.Agent) []string {
	ov, nv := &old.Version, &a.Version
	fields := []struct {
		name    string
		changed bool
	}{
		{"agent_name", old.Name != a.Name},
		{"agent_description", old.Description != a.Description},
		{"model", ov.Model != nv.Model},
		{"max_token", ov.MaxTokens != nv.MaxTokens},
		{"temperature", ov.Temperature != nv.Temperature},
		{"instructions", ov.Instructions != nv.Instructions},
		{"demonstrations", !slices.Equal(ov.Demonstrations, nv.Demonstrations)},
		{"tools", !bytes.Equal(ov.Tools, nv.Tools)},
		{"response_format", !bytes.Equal(ov.ResponseFormat, nv.ResponseFormat)},
		{"status", old.Active != a.Active},
		{"conversation_saving_enabled", old.ConversationSaving != a.ConversationSaving},
		{"canary", !equalCanary(old.Canary, a.Canary)},
	}
	changes := []string{}
	for _, f := range fields {
		if f.changed {
			changes = append(changes, f.name)
		}
	}
	return changes
}

// auditDeleted is the audit entry of a's deletion at now.
func auditDeleted(a *agentd.Agent, now time.Time) agentd.AuditEntry {
	return agentd.AuditEntry{CreatedAt: now, OrgID: a.OrgID, Action: agentd.AuditAgentDelete,
		TargetType: agentd.TargetAgent, TargetID: a.ID, Detail: agentd.AuditDetail(map[string]any{"name": a.Name})}
}

// equalCanary reports whether two canaries (nil: none) are the same.
func equalCanary(a, b *agentd.Canary) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
