package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/store/storetest"
)

// TestMigrate: agentd migrate applies the migrations once and says so, then finds
// nothing to do; check then finds the empty database consistent.
func TestMigrate(t *testing.T) {
	for _, dialect := range storetest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			dsn := storetest.DSN(t, dialect)
			ctx := context.Background()
			env := func(string) string { return "" }
			var out, errOut bytes.Buffer
			if err := run(ctx, []string{"migrate", "--db", dsn}, env, nil, &out, &errOut); err != nil {
				t.Fatalf("migrate: %v\n%s", err, errOut.String())
			}
			if !strings.Contains(out.String(), "migrated from schema version 0 to") {
				t.Errorf("first migrate said %q", out.String())
			}
			out.Reset()
			if err := run(ctx, []string{"migrate"}, func(k string) string {
				if k == "AGENTD_DB" {
					return dsn
				}
				return ""
			}, nil, &out, &errOut); err != nil {
				t.Fatalf("second migrate: %v", err)
			}
			if !strings.Contains(out.String(), "the newest this agentd knows") {
				t.Errorf("second migrate said %q", out.String())
			}
			out.Reset()
			if err := run(ctx, []string{"check", "--db", dsn}, env, nil, &out, &errOut); err != nil || !strings.Contains(out.String(), "is consistent") {
				t.Errorf("check: %v %q", err, out.String())
			}
		})
	}
	var errOut bytes.Buffer
	err := run(context.Background(), []string{"migrate"}, func(string) string { return "" }, nil, &errOut, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--db") {
		t.Errorf("migrate without a database: %v", err)
	}
}
