package agents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/agentd/agentd"
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

// op is one step of an edit script: ' ' keep, '-' remove a[i], '+' add b[j].
type op struct {
	kind byte
	i, j int
}

// script is an edit script from a to b along a longest common subsequence.
func script[T comparable](a, b []T) []op {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, op{' ', i, j})
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, op{'-', i, j})
			i++
		default:
			ops = append(ops, op{'+', i, j})
			j++
		}
	}
	return ops
}

// diffDemos compares demonstrations item by item: within each stretch between
// unchanged items, removed and added ones pair up, in order, as changed.
func diffDemos(a, b []agentd.Demonstration) []DemoChange {
	out := []DemoChange{}
	ops := script(a, b)
	for k := 0; k < len(ops); {
		if ops[k].kind == ' ' {
			k++
			continue
		}
		var del, ins []int
		for ; k < len(ops) && ops[k].kind != ' '; k++ {
			if ops[k].kind == '-' {
				del = append(del, ops[k].i)
			} else {
				ins = append(ins, ops[k].j)
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

// maxDiffCells bounds the table of a line diff; a longer middle (after the common
// head and tail) is shown as removed whole, then added whole.
const maxDiffCells = 4 << 20

// unified is the unified diff of lines a and b, three lines of context.
func unified(nameA, nameB string, a, b []string) string {
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	ma, mb := a[head:len(a)-tail], b[head:len(b)-tail]
	if len(ma) == 0 && len(mb) == 0 {
		return ""
	}
	var mid []op
	if (len(ma)+1)*(len(mb)+1) <= maxDiffCells {
		mid = script(ma, mb)
	} else {
		for i := range ma {
			mid = append(mid, op{'-', i, 0})
		}
		for j := range mb {
			mid = append(mid, op{'+', len(ma), j})
		}
	}
	ops := make([]op, 0, head+len(mid)+tail)
	for i := 0; i < head; i++ {
		ops = append(ops, op{' ', i, i})
	}
	for _, o := range mid {
		ops = append(ops, op{o.kind, o.i + head, o.j + head})
	}
	for k := 0; k < tail; k++ {
		ops = append(ops, op{' ', len(a) - tail + k, len(b) - tail + k})
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	const ctx = 3
	for k := 0; k < len(ops); {
		if ops[k].kind == ' ' {
			k++
			continue
		}
		start := max(k-ctx, 0)
		end := k // extend while changes are within 2·ctx of each other
		for e := k; e < len(ops); e++ {
			if ops[e].kind != ' ' {
				end = e
			} else if e-end > 2*ctx {
				break
			}
		}
		stop := min(end+ctx+1, len(ops))
		oldStart, newStart, oldN, newN := ops[start].i, ops[start].j, 0, 0
		for _, o := range ops[start:stop] {
			if o.kind != '+' {
				oldN++
			}
			if o.kind != '-' {
				newN++
			}
		}
		fmt.Fprintf(&sb, "@@ -%d,%d +%d,%d @@\n", oldStart+1, oldN, newStart+1, newN)
		for _, o := range ops[start:stop] {
			switch o.kind {
			case ' ':
				sb.WriteString(" " + a[o.i] + "\n")
			case '-':
				sb.WriteString("-" + a[o.i] + "\n")
			default:
				sb.WriteString("+" + b[o.j] + "\n")
			}
		}
		k = stop
	}
	return sb.String()
}
