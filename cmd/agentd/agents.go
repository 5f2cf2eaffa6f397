package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentd/agentd/client"
)

// agentsList lists the organization's agents.
func agentsList(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("agents list")
	all := fs.Bool("all", false, "include inactive agents")
	f := addClientFlags(fs, "agents:read", true)
	cl, err := connect(ctx, c, fs, f, args)
	if err != nil {
		return err
	}
	list, err := cl.Agents(ctx, *all)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSONList(c.stdout, "agents")
	}
	rows := make([][]string, len(list))
	for i, a := range list {
		last := "never"
		if a.LastUsed != nil {
			last = *a.LastUsed
		}
		rows[i] = []string{a.Name, a.ID, a.BaseModel, a.Status, strconv.Itoa(a.Version), strconv.FormatInt(a.UsageCount, 10), last}
	}
	return table(c.stdout, "NAME\tID\tMODEL\tSTATUS\tVERSION\tRUNS\tLAST USED", rows)
}

// agentsGet shows one agent.
func agentsGet(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("agents get")
	f := addClientFlags(fs, "agents:read", true)
	cl, err := connect(ctx, c, fs, f, args, "AGENT")
	if err != nil {
		return err
	}
	a, err := cl.Agent(ctx, fs.Arg(0))
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	return printAgent(c.stdout, a)
}

// agentsCreate creates an agent from a file and/or flags.
func agentsCreate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("agents create")
	af := addAgentFlags(fs)
	f := addClientFlags(fs, "agents:write", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs); err != nil {
		return err
	}
	spec, err := af.spec(fs, c.stdin)
	if err != nil {
		return err
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	a, err := cl.CreateAgent(ctx, spec)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	return printAgent(c.stdout, a)
}

// agentsUpdate changes the fields of an agent that a file and/or flags give.
func agentsUpdate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("agents update")
	af := addAgentFlags(fs)
	f := addClientFlags(fs, "agents:write", true)
	if err := parseFlags(ctx, fs, args, c.stdout); err != nil {
		return err
	}
	if err := wantArgs(fs, "AGENT"); err != nil {
		return err
	}
	spec, err := af.spec(fs, c.stdin)
	if err != nil {
		return err
	}
	if b, _ := json.Marshal(spec); string(b) == "{}" {
		return fmt.Errorf("agents update: nothing to change: give --file or the fields to change (see agentd agents update --help)")
	}
	cl, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	a, err := cl.UpdateAgent(ctx, fs.Arg(0), spec)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "data")
	}
	return printAgent(c.stdout, a)
}

// agentsDelete deletes an agent.
func agentsDelete(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("agents delete")
	f := addClientFlags(fs, "agents:write", true)
	cl, err := connect(ctx, c, fs, f, args, "AGENT")
	if err != nil {
		return err
	}
	if err := cl.DeleteAgent(ctx, fs.Arg(0)); err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(c.stdout, "")
	}
	_, err = fmt.Fprintf(c.stdout, "deleted agent %s and its session history (its usage records stay)\n", fs.Arg(0))
	return err
}

// printAgent writes an agent as a list of its fields.
func printAgent(w io.Writer, a *client.Agent) error {
	saving := "not saved"
	if a.ConversationSavingEnabled {
		saving = "saved per session"
	}
	last := "never"
	if a.LastUsed != nil {
		last = *a.LastUsed
	}
	rows := [][]string{
		{"name:", a.Name}, {"id:", a.ID}, {"description:", a.Description}, {"model:", a.BaseModel},
		{"status:", a.Status}, {"version:", strconv.Itoa(a.Version)}, {"max tokens:", strconv.Itoa(a.MaxToken)},
		{"temperature:", strconv.FormatFloat(a.Temperature, 'f', -1, 64)}, {"conversations:", saving},
		{"endpoint:", a.Endpoint}, {"runs:", fmt.Sprintf("%d (last %s)", a.UsageCount, last)},
		{"created:", a.CreatedDate}, {"updated:", a.UpdatedDate},
	}
	if len(a.Tools) > 0 && string(a.Tools) != "[]" && string(a.Tools) != "null" {
		rows = append(rows, []string{"tools:", string(a.Tools)})
	}
	if len(a.ResponseFormat) > 0 && string(a.ResponseFormat) != "null" {
		rows = append(rows, []string{"response format:", string(a.ResponseFormat)})
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%-16s %s\n", r[0], r[1])
	}
	b.WriteString("instructions:\n")
	for _, line := range strings.Split(orDash(a.SystemPrompt), "\n") {
		b.WriteString("  " + line + "\n")
	}
	fmt.Fprintf(&b, "demonstrations:   %d\n", len(a.Demonstrations))
	for i, d := range a.Demonstrations {
		fmt.Fprintf(&b, "  %d. %s\n     => %s\n", i+1, d.Input, d.Output)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// agentFlags are the fields of agents create and update.
type agentFlags struct {
	file                            string
	name, description, model, instr string
	status, saving                  string
	maxTokens                       int
	temperature                     float64
	demos                           demoList
	tools, responseFormat           string
}

// demoList is a repeated --demo 'INPUT => OUTPUT'.
type demoList []client.Demonstration

func (d *demoList) String() string { return "" }

func (d *demoList) Set(v string) error {
	in, out, ok := strings.Cut(v, "=>")
	if !ok {
		return fmt.Errorf("want INPUT => OUTPUT")
	}
	*d = append(*d, client.Demonstration{Input: strings.TrimSpace(in), Output: strings.TrimSpace(out)})
	return nil
}

func addAgentFlags(fs *flag.FlagSet) *agentFlags {
	af := &agentFlags{}
	fs.StringVar(&af.file, "file", "", "read the agent from `FILE`, JSON or YAML with the API's fields (agent_name, model, …); - for stdin")
	fs.StringVar(&af.name, "name", "", "the agent's `NAME` (normalized: Support Bot runs as support_bot)")
	fs.StringVar(&af.description, "description", "", "`TEXT` saying what the agent does")
	fs.StringVar(&af.model, "model", "", "a catalog `MODEL`, such as offline")
	fs.StringVar(&af.instr, "instructions", "", "the system prompt, as `TEXT`")
	fs.IntVar(&af.maxTokens, "max-tokens", 0, "the reply limit: at most `N` tokens")
	fs.Float64Var(&af.temperature, "temperature", 0, "the sampling temperature `T`, from 0 to 2")
	fs.StringVar(&af.status, "status", "", "`ACTIVE|INACTIVE`: whether the agent may run")
	fs.StringVar(&af.saving, "conversation-saving", "", "`true|false`: keep each session's conversation")
	fs.Var(&af.demos, "demo", "a demonstration, `'INPUT => OUTPUT'`; repeat it for more (replaces the agent's demonstrations)")
	fs.StringVar(&af.tools, "tools", "", "the agent's tools, OpenAI's `JSON` ([] removes them)")
	fs.StringVar(&af.responseFormat, "response-format", "", "the agent's response format, OpenAI's `JSON` (null removes it)")
	return af
}

// spec is the agent the file and the flags give; a flag wins over the file.
func (af *agentFlags) spec(fs *flag.FlagSet, stdin io.Reader) (client.AgentSpec, error) {
	var spec client.AgentSpec
	if af.file != "" {
		var err error
		if spec, err = readAgentFile(af.file, stdin); err != nil {
			return spec, fmt.Errorf("%s: %w", fs.Name(), err)
		}
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			spec.Name = &af.name
		case "description":
			spec.Description = &af.description
		case "model":
			spec.Model = &af.model
		case "instructions":
			spec.Instructions = &af.instr
		case "max-tokens":
			spec.MaxToken = &af.maxTokens
		case "temperature":
			spec.Temperature = &af.temperature
		case "status":
			spec.Status = &af.status
		case "conversation-saving":
			b, perr := strconv.ParseBool(af.saving)
			if perr != nil {
				err = fmt.Errorf("%s: --conversation-saving %q: want true or false", fs.Name(), af.saving)
			}
			spec.ConversationSavingEnabled = &b
		case "demo":
			spec.Demonstrations = af.demos
		case "tools", "response-format":
			v := af.tools
			if f.Name == "response-format" {
				v = af.responseFormat
			}
			if !json.Valid([]byte(v)) {
				err = fmt.Errorf("%s: --%s is not JSON: %s", fs.Name(), f.Name, truncate(v, 80))
			}
			if f.Name == "tools" {
				spec.Tools = json.RawMessage(v)
			} else {
				spec.ResponseFormat = json.RawMessage(v)
			}
		}
	})
	return spec, err
}

// agentFileFields are the fields of an agent file: the API's, for create and update.
var agentFileFields = []string{"agent_name", "agent_description", "model", "instructions", "demonstrations",
	"max_token", "max_tokens", "temperature", "status", "conversation_saving_enabled", "tools", "response_format"}

// readAgentFile reads an agent from a JSON or YAML file (- for stdin) holding the
// body of the API's create or update. Errors name the file and the field.
func readAgentFile(path string, stdin io.Reader) (client.AgentSpec, error) {
	var spec client.AgentSpec
	data, path, err := readInput(path, stdin)
	if err != nil {
		return spec, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return spec, fmt.Errorf("%s: an agent file is a mapping of the agent's fields (%s)", path, strings.Join(agentFileFields, ", "))
		}
		return spec, fmt.Errorf("%s is neither JSON nor YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc == nil {
		return spec, fmt.Errorf("%s is empty: it should hold the agent's fields (%s)", path, strings.Join(agentFileFields, ", "))
	}
	for k := range doc {
		if !slices.Contains(agentFileFields, k) {
			return spec, fmt.Errorf("%s: unknown field %q; an agent has %s", path, k, strings.Join(agentFileFields, ", "))
		}
	}
	if v, ok := doc["max_tokens"]; ok {
		if _, both := doc["max_token"]; !both {
			doc["max_token"] = v
		}
		delete(doc, "max_tokens")
	}
	if demos, ok := doc["demonstrations"].([]any); ok {
		for i, d := range demos {
			m, ok := d.(map[string]any)
			if !ok {
				return spec, fmt.Errorf("%s: demonstrations[%d]: want {input, output}", path, i)
			}
			if _, ok := m["input"]; !ok {
				m["input"], m["output"] = m["user_input"], m["model_output"]
				delete(m, "user_input")
				delete(m, "model_output")
			}
			if m["input"] == nil || m["output"] == nil {
				return spec, fmt.Errorf("%s: demonstrations[%d]: a demonstration needs input and output", path, i)
			}
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return spec, fmt.Errorf("%s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return spec, fmt.Errorf("%s: %s: a %s is not %s", path, te.Field, te.Value, jsonKind(te.Type.String()))
		}
		return spec, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}

// jsonKind says in words what a value of the Go type named goType is.
func jsonKind(goType string) string {
	t := strings.TrimLeft(goType, "*")
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "int"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	}
	return "an object"
}
