package api

import "strings"

// A spreadsheet opening the usage CSV runs a cell that starts with "=", "+",
// "-" or "@" (or a tab or carriage return before one) as a formula: an owner
// named =HYPERLINK("http://…") would be a link in the operator's spreadsheet.
// Text cells that start so get a leading single quote, as OWASP advises ("CSV
// Injection"): shown as text, and the quote is visible to a program reading the
// file. Numbers and times agentd formats itself stay as they are.

// csvTextColumns are the indexes of the CSV columns that carry text from
// callers, keys or configuration.
var csvTextColumns = csvIndexes("key_id", "owner", "agent_name", "session_id", "model_requested", "model",
	"usage_source", "outcome", "error_code")

func csvIndexes(names ...string) []int {
	idx := make([]int, len(names))
	for i, name := range names {
		idx[i] = -1
		for j, c := range csvColumns {
			if c == name {
				idx[i] = j
			}
		}
		if idx[i] < 0 {
			panic("api: no CSV column " + name)
		}
	}
	return idx
}

// csvText escapes a text cell that a spreadsheet would take for a formula.
func csvText(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}

// escapeCSVText applies csvText to the text columns of a CSV row.
func escapeCSVText(row []string) {
	for _, i := range csvTextColumns {
		row[i] = csvText(row[i])
	}
}
