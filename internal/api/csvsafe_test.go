package api

import "testing"

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

// TestEscapeCSVText: the text columns are escaped, the others (ids, times and
// numbers agentd formats itself) are not. The export's own test, through the
// server, checks csvRecord's cells.
func TestEscapeCSVText(t *testing.T) {
	row := make([]string, len(csvColumns))
	for i := range row {
		row[i] = "-1"
	}
	escapeCSVText(row)
	text := map[string]bool{"key_id": true, "owner": true, "agent_name": true, "session_id": true, "model_requested": true,
		"model": true, "usage_source": true, "outcome": true, "error_code": true}
	for i, name := range csvColumns {
		if want := map[bool]string{true: "'-1", false: "-1"}[text[name]]; row[i] != want {
			t.Errorf("column %s = %q, want %q", name, row[i], want)
		}
	}
}
