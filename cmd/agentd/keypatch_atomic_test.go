package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/agentd/agentd/client"
)

// TestKeyPatchRefusedChangesNothing: a PATCH /api/v3/keys/{id} that sets a
// budget together with rate limits or access, and is refused for the caller's
// mistake in the latter, changes nothing: not the budget either.
func TestKeyPatchRefusedChangesNothing(t *testing.T) {
	s, _, op := ratedServer(t, "")
	ctx := context.Background()
	app, err := op.CreateKey(ctx, client.KeySpec{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	budgetOf := func() any {
		t.Helper()
		status, _, body := rawCall(t, "GET", s.URL+"/api/v3/keys", s.Key, nil, "")
		if status != 200 {
			t.Fatalf("list keys: %d %s", status, body)
		}
		var list struct {
			Data []map[string]any `json:"data"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		for _, k := range list.Data {
			if k["id"] == app.ID {
				return k["budget"]
			}
		}
		t.Fatalf("key %s not listed", app.ID)
		return nil
	}
	for _, bad := range []string{
		`{"budget": 5, "rate_limits": {"rpm": -1}}`,
		`{"budget": 5, "expires_at": "2001-01-01T00:00:00Z"}`,
		`{"budget": 5, "agents": [""]}`,
	} {
		status, _, body := rawCall(t, "PATCH", s.URL+"/api/v3/keys/"+app.ID, s.Key, nil, bad)
		if status != 422 {
			t.Errorf("%s: %d %s, want 422", bad, status, body)
		}
		if b := budgetOf(); b != nil {
			t.Errorf("%s was refused (%d) but set the budget to %v", bad, status, b)
		}
	}
}
