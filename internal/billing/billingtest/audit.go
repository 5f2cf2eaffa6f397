package billingtest

import (
	"encoding/json"
	"testing"

	"github.com/agentd/agentd"
)

// testAudited: every grant, correction and budget change writes one audit entry
// in its own transaction, saying who made it and from where; a refused one
// writes none.
func testAudited(t *testing.T, w *world) {
	key := w.key(t, agentd.Budget{})
	entries := func() []agentd.AuditEntry {
		t.Helper()
		es, _, err := w.DB.AuditPage(w.ctx, agentd.AuditFilter{OrgID: w.orgID})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	type want struct {
		action agentd.AuditAction
		target string
		detail map[string]any
	}
	steps := []struct {
		name   string
		change func() error
		want   *want // nil: refused, no entry
	}{
		{"grant", func() error { _, err := w.Accounts.Grant(w.ctx, w.orgID, 5_000_000, w.by()); return err },
			&want{agentd.AuditCreditsGrant, w.orgID, map[string]any{"amount": 5.0, "balance": 5.0}}},
		{"correction", func() error { _, err := w.Accounts.Grant(w.ctx, w.orgID, -1_500_000, w.by()); return err },
			&want{agentd.AuditCreditsGrant, w.orgID, map[string]any{"amount": -1.5, "balance": 3.5, "correction": true}}},
		{"correction past the balance", func() error { _, err := w.Accounts.Grant(w.ctx, w.orgID, -4_000_000, w.by()); return err }, nil},
		{"grant past the largest balance", func() error { _, err := w.Accounts.Grant(w.ctx, w.orgID, agentd.MaxMicros, w.by()); return err }, nil},
		{"budget", func() error {
			_, err := w.Accounts.SetBudget(w.ctx, w.orgID, key, agentd.Budget{Set: true, Limit: 2_000_000, Period: agentd.PeriodDaily}, w.by())
			return err
		}, &want{agentd.AuditKeyUpdate, key, map[string]any{"budget": 2.0, "budget_period": "daily"}}},
		{"no budget", func() error {
			_, err := w.Accounts.SetBudget(w.ctx, w.orgID, key, agentd.Budget{Period: agentd.PeriodNone}, w.by())
			return err
		}, &want{agentd.AuditKeyUpdate, key, map[string]any{"budget": nil, "budget_period": "none"}}},
		{"budget of an unknown key", func() error {
			_, err := w.Accounts.SetBudget(w.ctx, w.orgID, "key-nope", agentd.Budget{Set: true, Limit: 1, Period: agentd.PeriodNone}, w.by())
			return err
		}, nil},
	}
	seen := map[string]bool{}
	for _, st := range steps {
		err := st.change()
		// The clock stands still: entries of one time are in no particular order.
		var added []agentd.AuditEntry
		for _, e := range entries() {
			if !seen[e.ID] {
				seen[e.ID] = true
				added = append(added, e)
			}
		}
		if st.want == nil {
			if err == nil {
				t.Errorf("%s: succeeded, want refused", st.name)
			}
			if len(added) != 0 {
				t.Errorf("%s (refused: %v): %d new audit entries, want none", st.name, err, len(added))
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if len(added) != 1 {
			t.Fatalf("%s: %d new audit entries, want 1", st.name, len(added))
		}
		e, by := added[0], w.by()
		if e.Action != st.want.action || e.TargetID != st.want.target || e.OrgID != w.orgID ||
			e.ActorKeyID != by.KeyID || e.ActorOwner != by.Owner || e.ActorOrgID != by.OrgID ||
			e.ClientIP != by.ClientIP || e.RequestID != by.RequestID || !e.CreatedAt.Equal(w.Clock.Now().Truncate(1000)) {
			t.Errorf("%s: entry %+v", st.name, e)
		}
		var detail map[string]any
		if err := json.Unmarshal(e.Detail, &detail); err != nil {
			t.Fatalf("%s: detail %s: %v", st.name, e.Detail, err)
		}
		for k, v := range st.want.detail {
			if got, ok := detail[k]; !ok || got != v {
				t.Errorf("%s: detail[%q] = %v, want %v (%s)", st.name, k, got, v, e.Detail)
			}
		}
	}
}
