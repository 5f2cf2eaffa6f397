package agents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/editscript"
)

// VersionDiff is what changed from one version of an agent to another: every
// configuration field that differs with its old and new value, the
// demonstrations compared item by item, and a unified-text rendering of both.
type VersionDiff struct {
	From           int           `json:"from"`
	To             int           `json:"to"`
	Changes        []FieldChange `json:"changes"`
	Demonstrations []DemoChange  `json:"demonstrations"`
	Unified        string        `json:"unified"`
}

// FieldChange is one field that differs, by the API's field name.
type FieldChange struct {
	Field string `json:"field"`
	Old   any    `json:"old"`
	New   any    `json:"new"`
}

// DemoChange is one demonstration added, removed or changed; indexes are
// 0-based positions in the old and the new list.
type DemoChange struct {
	Change   string                `json:"change"` // added | removed | changed
	OldIndex *int                  `json:"old_index,omitempty"`
	NewIndex *int                  `json:"new_index,omitempty"`
	Old      *agentd.Demonstration `json:"old,omitempty"`
	New      *agentd.Demonstration `json:"new,omitempty"`
}

func rawOr(b []byte, none string) json.RawMessage {
	if b == nil {
		return json.RawMessage(none)
	}
	return b
}

// Diff compares version from with version to.
func Diff(from, to *agentd.Version) *VersionDiff {
	d := &VersionDiff{From: from.Number, To: to.Number, Changes: []FieldChange{}, Demonstrations: []DemoChange{}}
	add := func(field string, changed bool, o, n any) {
		if changed {
			d.Changes = append(d.Changes, FieldChange{Field: field, Old: o, New: n})
		}
	}
	add("model", from.Model != to.Model, from.Model, to.Model)
	add("max_token", from.MaxTokens != to.MaxTokens, from.MaxTokens, to.MaxTokens)
	add("temperature", from.Temperature != to.Temperature, from.Temperature, to.Temperature)
	add("instructions", from.Instructions != to.Instructions, from.Instructions, to.Instructions)
	od, nd := nonNil(from.Demonstrations), nonNil(to.Demonstrations)
	add("demonstrations", !slices.Equal(od, nd), od, nd)
	add("tools", !bytes.Equal(from.Tools, to.Tools), rawOr(from.Tools, "[]"), rawOr(to.Tools, "[]"))
	add("response_format", !bytes.Equal(from.ResponseFormat, to.ResponseFormat), rawOr(from.ResponseFormat, "null"), rawOr(to.ResponseFormat, "null"))
	d.Demonstrations = diffDemos(od, nd)
	d.Unified = unified(fmt.Sprintf("version %d", from.Number), fmt.Sprintf("version %d", to.Number), render(from), render(to))
	return d
}

func nonNil(d []agentd.Demonstration) []agentd.Demonstration {
	if d == nil {
		return []agentd.Demonstration{}
	}
	return d
}

// diffDemos compares demonstrations item by item: within each stretch between
// unchanged items, removed and added ones pair up, in order, as changed.
func diffDemos(a, b []agentd.Demonstration) []DemoChange {
	out := []DemoChange{}
	ops := editscript.Script(a, b)
	for k := 0; k < len(ops); {
		if ops[k].Kind == ' ' {
			k++
			continue
		}
		var del, ins []int
		for ; k < len(ops) && ops[k].Kind != ' '; k++ {
			if ops[k].Kind == '-' {
				del = append(del, ops[k].I)
			} else {
				ins = append(ins, ops[k].J)
			}
		}
		for x := 0; x < max(len(del), len(ins)); x++ {
			var c DemoChange
			switch {
			case x < len(del) && x < len(ins):
				c.Change = "changed"
			case x < len(del):
				c.Change = "removed"
			default:
				c.Change = "added"
			}
			if x < len(del) {
				i := del[x]
				c.OldIndex, c.Old = &i, &a[i]
			}
			if x < len(ins) {
				j := ins[x]
				c.NewIndex, c.New = &j, &b[j]
			}
			out = append(out, c)
		}
	}
	return out
}

// render lays a version's configuration out as lines, for the unified diff.
func render(v *agentd.Version) []string {
	lines := []string{
		"model: " + v.Model,
		"max_token: " + strconv.Itoa(v.MaxTokens),
		"temperature: " + strconv.FormatFloat(v.Temperature, 'g', -1, 64),
		"tools: " + string(rawOr(v.Tools, "[]")),
		"response_format: " + string(rawOr(v.ResponseFormat, "null")),
		"instructions:",
	}
	for _, l := range strings.Split(v.Instructions, "\n") {
		lines = append(lines, "  "+l)
	}
	for i, d := range v.Demonstrations {
		lines = append(lines, fmt.Sprintf("demonstrations[%d].input: %s", i, strconv.Quote(d.Input)),
			fmt.Sprintf("demonstrations[%d].output: %s", i, strconv.Quote(d.Output)))
	}
	return lines
}

// unified is the unified diff of lines a and b, three lines of context.
func unified(nameA, nameB string, a, b []string) string {
	ops := editscript.Script(a, b)
	if !slices.ContainsFunc(ops, func(o editscript.Op) bool { return o.Kind != ' ' }) {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	const ctx = 3
	for k := 0; k < len(ops); {
		if ops[k].Kind == ' ' {
			k++
			continue
		}
		start := max(k-ctx, 0)
		end := k // extend while changes are within 2·ctx of each other
		for e := k; e < len(ops); e++ {
			if ops[e].Kind != ' ' {
				end = e
			} else if e-end > 2*ctx {
				break
			}
		}
		stop := min(end+ctx+1, len(ops))
		oldStart, newStart, oldN, newN := ops[start].I, ops[start].J, 0, 0
		for _, o := range ops[start:stop] {
			if o.Kind != '+' {
				oldN++
			}
			if o.Kind != '-' {
				newN++
			}
		}
		fmt.Fprintf(&sb, "@@ -%d,%d +%d,%d @@\n", oldStart+1, oldN, newStart+1, newN)
		for _, o := range ops[start:stop] {
			switch o.Kind {
			case ' ':
				sb.WriteString(" " + a[o.I] + "\n")
			case '-':
				sb.WriteString("-" + a[o.I] + "\n")
			default:
				sb.WriteString("+" + b[o.J] + "\n")
			}
		}
		k = stop
	}
	return sb.String()
}
