package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/editscript"
)

// Plan actions.
const (
	actCreate    = "create"
	actUpdate    = "update"
	actDelete    = "delete"
	actUnchanged = "unchanged"
)

// planItem is what apply does, or would do, to one agent.
type planItem struct {
	Agent  string        `json:"agent"`
	Action string        `json:"action"`
	File   string        `json:"file,omitempty"`
	Fields []fieldChange `json:"fields,omitempty"`
	// Result is "applied" or "failed" once apply ran; empty in a dry run.
	Result  string `json:"result,omitempty"`
	Version int    `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`

	doc *agentDoc
}

// fieldChange is one field that a create sets or an update changes. Old is
// absent for a create.
type fieldChange struct {
	Field string          `json:"field"`
	Old   json.RawMessage `json:"old,omitempty"`
	New   json.RawMessage `json:"new"`
}

// plan is apply's plan: every agent of the files, and with --prune the server's
// agents that no file names.
type plan struct {
	Path      string     `json:"path"`
	DryRun    bool       `json:"dry_run"`
	Items     []planItem `json:"changes"`
	Unmanaged []string   `json:"unmanaged"` // on the server, in no file, not pruned
	Summary   struct {
		Create    int `json:"create"`
		Update    int `json:"update"`
		Delete    int `json:"delete"`
		Unchanged int `json:"unchanged"`
		Failed    int `json:"failed"`
	} `json:"summary"`
}

func (p *plan) changes() int { return p.Summary.Create + p.Summary.Update + p.Summary.Delete }

// makePlan compares the files' agents with the server's.
func makePlan(path string, docs []*agentDoc, current []*client.Agent, prune bool) *plan {
	p := &plan{Path: path, Unmanaged: []string{}}
	byName := map[string]*client.Agent{}
	for _, a := range current {
		byName[a.Name] = a
	}
	inFiles := map[string]bool{}
	var creates, updates, same []planItem
	for _, d := range docs {
		inFiles[d.name] = true
		it := planItem{Agent: d.name, File: d.file, doc: d}
		cur, ok := byName[d.name]
		if !ok {
			it.Action = actCreate
			for _, f := range codeFields {
				if v, ok := d.fields[f.name]; ok {
					it.Fields = append(it.Fields, fieldChange{Field: f.name, New: v})
				}
			}
			creates = append(creates, it)
			continue
		}
		have := serverFields(cur)
		for _, f := range codeFields {
			want, ok := d.fields[f.name]
			if !ok || f.name == "agent_name" {
				continue
			}
			if !bytes.Equal(canonical(f.name, want), canonical(f.name, have[f.name])) {
				it.Fields = append(it.Fields, fieldChange{Field: f.name, Old: have[f.name], New: want})
			}
		}
		if len(it.Fields) == 0 {
			it.Action = actUnchanged
			same = append(same, it)
		} else {
			it.Action = actUpdate
			updates = append(updates, it)
		}
	}
	var deletes []planItem
	for _, a := range current {
		switch {
		case inFiles[a.Name]:
		case prune:
			deletes = append(deletes, planItem{Agent: a.Name, Action: actDelete})
		default:
			p.Unmanaged = append(p.Unmanaged, a.Name)
		}
	}
	byAgent := func(a, b planItem) int { return strings.Compare(a.Agent, b.Agent) }
	slices.SortFunc(deletes, byAgent)
	slices.Sort(p.Unmanaged)
	p.Items = slices.Concat(creates, updates, deletes, same)
	p.Summary.Create, p.Summary.Update, p.Summary.Delete, p.Summary.Unchanged = len(creates), len(updates), len(deletes), len(same)
	return p
}

// canonical is a field's JSON in one spelling per meaning, for comparison: keys
// sorted, status in capitals, no tools as [], a text response format as null.
func canonical(field string, raw json.RawMessage) []byte {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return raw
	}
	switch field {
	case "status":
		if s, ok := v.(string); ok {
			v = strings.ToUpper(s)
		}
	case "tools":
		if v == nil {
			v = []any{}
		}
	case "response_format":
		if m, ok := v.(map[string]any); ok && len(m) == 1 && m["type"] == "text" {
			v = nil
		}
	case "canary": // percent 10 and 10.0 are the same canary
		var c *client.Canary
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if dec.Decode(&c) == nil {
			b, _ := marshalJSON(c)
			return b
		}
	}
	b, _ := marshalJSON(v)
	return b
}

// applyCmd makes the server's agents what the files say.
func applyCmd(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("apply")
	var path string
	fs.StringVar(&path, "file", "", "the agent `FILE|DIR`: a YAML file, a folder of *.yaml and *.yml (recursively), or - for stdin")
	fs.StringVar(&path, "f", "", "short for --file")
	dryRun := fs.Bool("dry-run", false, "print the plan and change nothing")
	prune := fs.Bool("prune", false, "also delete the organization's agents that no file defines")
	note := fs.String("note", "", "a `TEXT` recorded with each new version (why it changed)")
	requireEvals := fs.Bool("require-evals", false, "store each new version of an updated agent as a draft, run its evals, and make it active only if they pass")
	exitCode := fs.Bool("exit-code", false, "with --dry-run, exit with status 2 when the plan has changes (0: none, 1: an error)")
	f := addClientFlags(fs, "agents:write", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs); err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("apply: which agents? give --file FILE or DIR (-f), - for stdin")
	}
	if *exitCode && !*dryRun {
		return fmt.Errorf("apply: --exit-code goes with --dry-run")
	}
	docs, err := loadAgentDocs(path, c.stdin)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	current, err := cl.Agents(ctx, true)
	if err != nil {
		return f.explain(err)
	}
	shown := path
	if path == "-" {
		shown = "stdin"
	}
	p := makePlan(shown, docs, current, *prune)
	p.DryRun = *dryRun
	if !f.json {
		if err := printPlan(c.stdout, p); err != nil {
			return err
		}
	}
	var failures []string
	if !*dryRun {
		for i := range p.Items {
			it := &p.Items[i]
			if it.Action == actUnchanged {
				continue
			}
			if err := applyItem(ctx, cl, f, it, *note, *requireEvals); err != nil {
				it.Result, it.Error = "failed", err.Error()
				p.Summary.Failed++
				failures = append(failures, it.Error)
			} else {
				it.Result = "applied"
			}
			if !f.json {
				printResult(c.stdout, it)
			}
		}
	}
	if f.json {
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if err := writeIndented(c.stdout, b); err != nil {
			return err
		}
	} else if err := printSummary(c.stdout, p); err != nil {
		return err
	}
	switch {
	case len(failures) > 0:
		return fmt.Errorf("apply: %d of %d changes failed:\n  %s", len(failures), p.changes(), strings.Join(failures, "\n  "))
	case *dryRun && *exitCode && p.changes() > 0:
		return &exitError{code: 2, msg: fmt.Sprintf("apply: the plan has %s (--exit-code)", plural(p.changes(), "change"))}
	}
	return nil
}

// configFields are the fields that make a version; the others (description,
// status, conversation saving) belong to the agent.
var configFields = []string{"model", "max_token", "temperature", "instructions", "demonstrations", "tools", "response_format"}

// applyItem makes one change: a create with every field of the file, an update
// with only the fields that differ, or a delete. With requireEvals an update
// that makes a new version stores it as a draft, evaluates it and activates it
// only if its evals pass; the agent's own fields change only then.
func applyItem(ctx context.Context, cl *client.Client, f *clientFlags, it *planItem, note string, requireEvals bool) error {
	err := applyChange(ctx, cl, it, note, requireEvals)
	if err == nil {
		return nil
	}
	where := "agent " + it.Agent
	if it.doc != nil {
		where = it.doc.where()
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		return fmt.Errorf("%s: %s", where, f.apiError(ce))
	}
	var ge *gateError
	if errors.As(err, &ge) {
		return fmt.Errorf("%s: %s", where, ge.msg(f))
	}
	return fmt.Errorf("%s: %w", where, f.explain(err))
}

// gateError is an update whose new version --require-evals kept from going live.
type gateError struct {
	version int
	cause   error
}

func (e *gateError) Error() string { return e.cause.Error() }

func (e *gateError) msg(f *clientFlags) string {
	why := e.cause.Error()
	var ce *client.Error
	if errors.As(e.cause, &ce) {
		why = f.apiError(ce)
	}
	return fmt.Sprintf("version %d is stored as a draft, not active: %s", e.version, why)
}

func applyChange(ctx context.Context, cl *client.Client, it *planItem, note string, requireEvals bool) error {
	body := map[string]json.RawMessage{}
	for _, fc := range it.Fields {
		body[fc.Field] = fc.New
	}
	if note != "" {
		body["note"], _ = marshalJSON(note)
	}
	var out struct{ Data *client.Agent }
	var err error
	switch it.Action {
	case actCreate:
		err = cl.Do(ctx, http.MethodPost, "/api/v3/agents/create", nil, body, &out)
	case actUpdate:
		delete(body, "agent_name")
		agent := "/api/v3/agents/" + url.PathEscape(it.Agent)
		draft := map[string]json.RawMessage{"activate": json.RawMessage("false")}
		for _, name := range configFields {
			if v, ok := body[name]; ok {
				draft[name] = v
				delete(body, name)
			}
		}
		// A note goes with a new version: a change of the agent's own fields
		// alone (description, status, canary) makes none, and the server
		// refuses a note there.
		if v, ok := body["note"]; ok && len(draft) > 1 {
			draft["note"] = v
		}
		delete(body, "note")
		if !requireEvals || len(draft) == 1 {
			maps.Copy(body, draft)
			delete(body, "activate")
			err = cl.Do(ctx, http.MethodPatch, agent, nil, body, &out)
			break
		}
		if err = cl.Do(ctx, http.MethodPost, agent+"/versions", nil, draft, &out); err != nil {
			return err
		}
		n := out.Data.Version
		it.Version = n
		version := agent + "/versions/" + strconv.Itoa(n)
		var report struct {
			Status string `json:"status"`
		}
		if err = cl.Do(ctx, http.MethodPost, version+"/evals", nil, nil, &report); err != nil {
			return &gateError{n, fmt.Errorf("its evals did not run: %w", err)}
		}
		if err = cl.Do(ctx, http.MethodPost, version+"/activate?require_evals=true", nil, nil, &out); err != nil {
			return &gateError{n, err}
		}
		if len(body) > 0 {
			err = cl.Do(ctx, http.MethodPatch, agent, nil, body, &out)
		}
	case actDelete:
		err = cl.DeleteAgent(ctx, it.Agent)
	}
	if err == nil && out.Data != nil {
		it.Version = out.Data.Version
	}
	return err
}

// exitError is an error with its own exit status.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// printPlan writes the plan: each change with its fields, the unchanged agents
// on one line.
func printPlan(w io.Writer, p *plan) error {
	var b strings.Builder
	var same []string
	for _, it := range p.Items {
		switch it.Action {
		case actUnchanged:
			same = append(same, it.Agent)
			continue
		case actCreate:
			fmt.Fprintf(&b, "+ create %s (%s)\n", it.Agent, it.File)
			for _, fc := range it.Fields {
				if fc.Field != "agent_name" {
					fmt.Fprintf(&b, "    %s: %s\n", fc.Field, shortValue(fc.New))
				}
			}
		case actUpdate:
			fmt.Fprintf(&b, "~ update %s (%s)\n", it.Agent, it.File)
			for _, fc := range it.Fields {
				writeFieldDiff(&b, fc)
			}
		case actDelete:
			fmt.Fprintf(&b, "- delete %s (on the server, in no file of %s)\n", it.Agent, p.Path)
		}
	}
	if len(same) > 0 {
		fmt.Fprintf(&b, "= unchanged: %s\n", strings.Join(same, ", "))
	}
	if len(p.Unmanaged) > 0 {
		fmt.Fprintf(&b, "  not in %s, left alone (--prune deletes them): %s\n", p.Path, strings.Join(p.Unmanaged, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func printResult(w io.Writer, it *planItem) {
	past := map[string]string{actCreate: "created", actUpdate: "updated", actDelete: "deleted"}[it.Action]
	switch {
	case it.Result == "failed":
		fmt.Fprintf(w, "failed to %s %s: %s\n", it.Action, it.Agent, it.Error)
	case it.Version > 0:
		fmt.Fprintf(w, "%s %s (version %d)\n", past, it.Agent, it.Version)
	default:
		fmt.Fprintf(w, "%s %s\n", past, it.Agent)
	}
}

func printSummary(w io.Writer, p *plan) error {
	s := p.Summary
	var err error
	switch {
	case p.changes() == 0:
		_, err = fmt.Fprintf(w, "No changes: the server's agents match %s (%d unchanged).\n", p.Path, s.Unchanged)
	case p.DryRun:
		_, err = fmt.Fprintf(w, "Plan: %d to create, %d to update, %d to delete, %d unchanged. Dry run: nothing was changed.\n", s.Create, s.Update, s.Delete, s.Unchanged)
	case s.Failed > 0:
		_, err = fmt.Fprintf(w, "Applied %d of %d changes; %d failed.\n", p.changes()-s.Failed, p.changes(), s.Failed)
	default:
		_, err = fmt.Fprintf(w, "Applied: %d created, %d updated, %d deleted, %d unchanged.\n", s.Create, s.Update, s.Delete, s.Unchanged)
	}
	return err
}

// shortValue is a field's value on one line: JSON, the first line of a longer text.
func shortValue(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil && strings.Contains(strings.TrimRight(s, "\n"), "\n") {
		lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
		first, _ := marshalJSON(lines[0])
		return fmt.Sprintf("%s… (%d lines)", first, len(lines))
	}
	if len(raw) > 0 && (raw[0] == '[' || raw[0] == '{') {
		var v []any
		if json.Unmarshal(raw, &v) == nil {
			return plural(len(v), "item")
		}
	}
	return truncate(string(raw), 100)
}

// writeFieldDiff writes how one field changes: old → new on one line, else the
// lines (texts of several lines, tools, response formats) or the items
// (demonstrations) that go and come.
func writeFieldDiff(b *strings.Builder, fc fieldChange) {
	var oldLines, newLines []string
	switch fc.Field {
	case "demonstrations":
		var o, n []client.Demonstration
		json.Unmarshal(fc.Old, &o)
		json.Unmarshal(fc.New, &n)
		fmt.Fprintf(b, "    demonstrations: %d → %d\n", len(o), len(n))
		for _, op := range editscript.Script(o, n) {
			switch op.Kind {
			case '-':
				fmt.Fprintf(b, "      - [%d] %s\n", op.I, demoText(o[op.I]))
			case '+':
				fmt.Fprintf(b, "      + [%d] %s\n", op.J, demoText(n[op.J]))
			}
		}
		return
	case "tools", "response_format":
		oldLines, newLines = indentedLines(fc.Old), indentedLines(fc.New)
	default:
		var o, n string
		if json.Unmarshal(fc.Old, &o) != nil || json.Unmarshal(fc.New, &n) != nil ||
			!(strings.Contains(o, "\n") || strings.Contains(n, "\n")) {
			fmt.Fprintf(b, "    %s: %s → %s\n", fc.Field, truncate(string(fc.Old), 200), truncate(string(fc.New), 200))
			return
		}
		oldLines, newLines = strings.Split(o, "\n"), strings.Split(n, "\n")
	}
	fmt.Fprintf(b, "    %s:\n", fc.Field)
	ops := editscript.Script(oldLines, newLines)
	// Unchanged lines are shown next to a change only.
	near := func(i int) bool {
		for j := max(0, i-1); j <= min(len(ops)-1, i+1); j++ {
			if ops[j].Kind != ' ' {
				return true
			}
		}
		return false
	}
	skipped := false
	for i, op := range ops {
		switch {
		case op.Kind == '-':
			fmt.Fprintf(b, "      - %s\n", oldLines[op.I])
		case op.Kind == '+':
			fmt.Fprintf(b, "      + %s\n", newLines[op.J])
		case near(i):
			fmt.Fprintf(b, "        %s\n", oldLines[op.I])
			skipped = false
		case !skipped:
			b.WriteString("        …\n")
			skipped = true
		}
	}
}

func demoText(d client.Demonstration) string {
	in, _ := marshalJSON(d.Input)
	out, _ := marshalJSON(d.Output)
	return string(in) + " => " + string(out)
}

func indentedLines(raw json.RawMessage) []string {
	var out bytes.Buffer
	if json.Indent(&out, raw, "", "  ") != nil {
		return []string{string(raw)}
	}
	return strings.Split(out.String(), "\n")
}

// exportCmd writes every agent of the key's organization as agent files.
func exportCmd(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("export")
	dir := fs.String("o", "", "write one `DIR`/AGENT.yaml per agent instead of one YAML stream to stdout")
	f := addClientFlags(fs, "agents:read", false)
	cl, err := connect(ctx, c, fs, f, args)
	if err != nil {
		return err
	}
	list, err := cl.Agents(ctx, true)
	if err != nil {
		return f.explain(err)
	}
	slices.SortFunc(list, func(a, b *client.Agent) int { return strings.Compare(a.Name, b.Name) })
	docs := make([]*yaml.Node, len(list))
	for i, a := range list {
		if docs[i], err = agentYAML(a); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if *dir == "" {
		return encodeYAML(c.stdout, docs...)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	for i, a := range list {
		var b bytes.Buffer
		if err := encodeYAML(&b, docs[i]); err != nil {
			return fmt.Errorf("export: agent %s: %w", a.Name, err)
		}
		file := filepath.Join(*dir, a.Name+".yaml")
		if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	_, err = fmt.Fprintf(c.stdout, "wrote %d agent files to %s\n", len(list), *dir)
	return err
}
