package api

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/store"
)

func TestCSVText(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "",
		"alice":                    "alice",
		"=HYPERLINK(\"http://x\")": "'=HYPERLINK(\"http://x\")",
		"+1":                       "'+1",
		"-cmd":                     "'-cmd",
		"@SUM(A1)":                 "'@SUM(A1)",
		"\t=1":                     "'\t=1",
		"\r=1":                     "'\r=1",
		"a=1":                      "a=1",
		" =1":                      " =1",
		"'quoted":                  "'quoted",
		"offline":                  "offline",
	} {
		if got := csvText(in); got != want {
			t.Errorf("csvText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCSVRecordEscapesText: every text column is escaped, no number is.
func TestCSVRecordEscapesText(t *testing.T) {
	r := &store.Run{ID: "run-1", Created: 1_700_000_000_000_000, OrgID: "org-1", KeyID: "=key", Owner: "=owner",
		AgentID: "agent-1", AgentName: "+agent", AgentVersion: 3, SessionID: "-session", ModelRequested: "@requested",
		Model: "\tmodel", InputTokens: 12, OutputTokens: 5, UsageSource: "=source", Cost: -1_500_000, LatencyMS: 42,
		Outcome: "\routcome", ErrorCode: "-error"}
	row := make([]string, len(csvColumns))
	csvRecord(row, r)
	text := map[int]bool{}
	for _, i := range csvTextColumns {
		text[i] = true
		if !strings.HasPrefix(row[i], "'") {
			t.Errorf("column %s = %q, not escaped", csvColumns[i], row[i])
		}
	}
	for i, name := range csvColumns {
		if !text[i] && strings.HasPrefix(row[i], "'") {
			t.Errorf("column %s = %q, escaped", name, row[i])
		}
	}
	if row[11] != "12" || row[12] != "5" || row[13] != "17" || row[15] != "-1.500000" || row[16] != "42" || row[7] != "3" {
		t.Errorf("numbers changed: %q", row)
	}
}
