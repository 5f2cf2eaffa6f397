// Package evals is agentd's test cases for agents: the case format (an agent's
// demonstrations, and cases written in YAML or JSON), loading it with errors that
// name the file, the case and the field, the checking of one reply against a case's
// expectations, and the loop that runs cases and sums their results. How a case is
// run is its caller's: the CLI runs each case through the HTTP API, the server
// through its runner. It imports neither the store nor the API.
package evals

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentd/agentd"
)

// Case is one test of an agent: a message (after optional turns of a
// conversation) and what its reply must satisfy.
type Case struct {
	Name  string `json:"name,omitempty"`
	Input string `json:"input"`
	// Session is the conversation before Input, sent as its history: the
	// assistant's replies as written here, not as the model would give them.
	Session []Turn `json:"session,omitempty"`
	Expect  Expect `json:"expect"`
	// Source is where the case comes from: "demonstration", or the file or
	// body it was read from. It is not read from a file.
	Source string `json:"source,omitempty"`
}

// Turn is one exchange of a case's conversation.
type Turn struct {
	User      string `json:"user"`
	Assistant string `json:"assistant"`
}

// Expect is what a reply must satisfy; every expectation set must hold.
type Expect struct {
	// Equals: the reply, without leading and trailing white space, is exactly this.
	Equals *string `json:"equals,omitempty"`
	// Contains: the reply contains each of these (a string or a list in a file).
	Contains Strings `json:"contains,omitempty"`
	// Regex: the reply matches this RE2 expression (anywhere; anchor it to match all).
	Regex string `json:"regex,omitempty"`
	// JSONSchema: the reply parses as JSON that this schema accepts (Schema).
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
	// MaxOutputTokens, MaxCost (credits) and MaxLatencyMS bound the run.
	MaxOutputTokens int      `json:"max_output_tokens,omitempty"`
	MaxCost         *float64 `json:"max_cost,omitempty"`
	MaxLatencyMS    int64    `json:"max_latency_ms,omitempty"`
}

// Strings is a list of strings that a file may also write as one string.
type Strings []string

// UnmarshalJSON takes a string or a list of strings.
func (s *Strings) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = Strings{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a string or a list of strings")
	}
	*s = many
	return nil
}

// FromDemonstrations makes a case of each demonstration: its input, and its output
// as the reply expected exactly (Expect.Equals). Exact equality is what the
// offline model gives, since it answers from the demonstrations; a real model
// rarely repeats one word for word, so the CLI and the API can leave them out.
func FromDemonstrations(demos []agentd.Demonstration) []Case {
	out := make([]Case, 0, len(demos))
	for i, d := range demos {
		want := d.Output
		out = append(out, Case{Name: fmt.Sprintf("demonstration %d", i+1), Input: d.Input,
			Expect: Expect{Equals: &want}, Source: "demonstration"})
	}
	return out
}

// MaxCases bounds the cases of one file or request body.
const MaxCases = 1000

// Parse reads cases from data, a YAML (or JSON) list of cases, naming them
// "case N" when they have no name and setting their Source to name. An error
// names the file, the line, the case and the field.
func Parse(name string, data []byte) ([]Case, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s:%d: want a list of cases", name, root.Line)
	}
	if len(root.Content) > MaxCases {
		return nil, fmt.Errorf("%s: %d cases, at most %d", name, len(root.Content), MaxCases)
	}
	cases := make([]Case, 0, len(root.Content))
	for i, n := range root.Content {
		label := fmt.Sprintf("case %d", i+1)
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s: %s", name, n.Line, label, fmt.Sprintf(format, args...))
		}
		if n.Kind != yaml.MappingNode {
			return nil, fail("want a mapping with input and expect")
		}
		if nm := field(n, "name"); nm != nil && nm.Kind == yaml.ScalarNode && nm.Value != "" {
			label = fmt.Sprintf("case %d (%q)", i+1, nm.Value)
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fail("%v", err)
		}
		js, err := json.Marshal(v)
		if err != nil {
			return nil, fail("%v", err)
		}
		var c Case
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fail("%s", jsonProblem(err))
		}
		if c.Source != "" {
			return nil, fail("source: is set by agentd, not by a file")
		}
		if err := c.validate(); err != nil {
			return nil, fail("%v", err)
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d", i+1)
		}
		c.Source = name
		cases = append(cases, c)
	}
	return cases, nil
}

// field is the value of key in mapping node n, or nil.
func field(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// jsonProblem words a decoding error with the field's path.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s: want %s, not %s", te.Field, te.Type, te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field " + f + " (a case has name, input, session and expect; expect has equals, contains, regex, json_schema, max_output_tokens, max_cost, max_latency_ms)"
	}
	return msg
}

// validate checks what decoding cannot.
func (c *Case) validate() error {
	if c.Input == "" {
		return errors.New("input: required, a non-empty string")
	}
	for i, t := range c.Session {
		if t.User == "" {
			return fmt.Errorf("session[%d].user: required", i)
		}
		if t.Assistant == "" {
			return fmt.Errorf("session[%d].assistant: required", i)
		}
	}
	e := &c.Expect
	for i, s := range e.Contains {
		if s == "" {
			return fmt.Errorf("expect.contains[%d]: empty", i)
		}
	}
	if e.Regex != "" {
		if _, err := regexp.Compile(e.Regex); err != nil {
			return fmt.Errorf("expect.regex: %v", err)
		}
	}
	if len(e.JSONSchema) > 0 {
		if _, err := ParseSchema(e.JSONSchema); err != nil {
			return fmt.Errorf("expect.json_schema: %v", err)
		}
	}
	switch {
	case e.MaxOutputTokens < 0:
		return errors.New("expect.max_output_tokens: must be positive")
	case e.MaxLatencyMS < 0:
		return errors.New("expect.max_latency_ms: must be positive")
	case e.MaxCost != nil:
		if _, err := agentd.CreditsToMicros(*e.MaxCost); err != nil || *e.MaxCost < 0 {
			return errors.New("expect.max_cost: must be a non-negative number of credits")
		}
	}
	if e.Equals == nil && len(e.Contains) == 0 && e.Regex == "" && len(e.JSONSchema) == 0 &&
		e.MaxOutputTokens == 0 && e.MaxCost == nil && e.MaxLatencyMS == 0 {
		return errors.New("expect: required, at least one of equals, contains, regex, json_schema, max_output_tokens, max_cost, max_latency_ms")
	}
	return nil
}
