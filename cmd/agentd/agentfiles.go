package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
)

// Agents as code: an agent file is a YAML document holding the fields of the
// API's create and update, one agent per document (a file may hold several,
// separated by ---, as export writes to stdout). apply reads a file, or every
// *.yaml and *.yml under a folder (recursively, skipping folders whose name
// starts with a dot, such as .git); export writes the same format.

// agentField is a field of an agent file: its name (the API's) and its kind.
type agentField struct {
	name string
	kind fieldKind
}

type fieldKind int

const (
	kindString fieldKind = iota
	kindInt
	kindFloat
	kindBool
	kindDemos
	kindJSON // tools, response_format: OpenAI's JSON, written as YAML
)

// codeFields are an agent file's fields, in the order export writes them.
var codeFields = []agentField{
	{"agent_name", kindString}, {"agent_description", kindString}, {"model", kindString},
	{"status", kindString}, {"max_token", kindInt}, {"temperature", kindFloat},
	{"conversation_saving_enabled", kindBool}, {"instructions", kindString},
	{"demonstrations", kindDemos}, {"tools", kindJSON}, {"response_format", kindJSON},
	{"canary", kindJSON}, // {version, percent}, or null for none
}

func codeFieldNames() string {
	names := make([]string, len(codeFields))
	for i, f := range codeFields {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

func lookupField(name string) (agentField, bool) {
	if name == "max_tokens" { // the API accepts both spellings
		name = "max_token"
	}
	for _, f := range codeFields {
		if f.name == name {
			return f, true
		}
	}
	return agentField{}, false
}

// agentDoc is one agent as a file gives it.
type agentDoc struct {
	file string // as the user named it, "stdin" for -
	line int    // of the document's first field
	name string // normalized: the agent's name on the server
	// fields are the fields the file sets, each the JSON the API takes. A field
	// the file leaves out is not managed: apply leaves it as the server has it.
	fields map[string]json.RawMessage
}

// where is the document's place for errors: "agents/faq.yaml: agent faq".
func (d *agentDoc) where() string {
	if d.name == "" {
		return fmt.Sprintf("%s:%d", d.file, d.line)
	}
	return fmt.Sprintf("%s: agent %s", d.file, d.name)
}

// loadAgentDocs reads the agents of path: a file, a folder (every *.yaml and
// *.yml under it) or - (stdin). Two documents naming the same agent are an error.
func loadAgentDocs(path string, stdin io.Reader) ([]*agentDoc, error) {
	var files []string
	if path == "-" {
		files = []string{"-"}
	} else {
		st, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, errors.Unwrap(err))
		}
		if !st.IsDir() {
			files = []string{path}
		} else {
			err := filepath.WalkDir(path, func(p string, e fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if e.IsDir() && p != path && strings.HasPrefix(e.Name(), ".") {
					return filepath.SkipDir
				}
				if ext := filepath.Ext(p); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
					files = append(files, p)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if len(files) == 0 {
				return nil, fmt.Errorf("%s holds no agent files (*.yaml, *.yml)", path)
			}
		}
	}
	var docs []*agentDoc
	seen := map[string]*agentDoc{}
	var problems []string
	for _, f := range files {
		ds, err := readAgentDocs(f, stdin)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		for _, d := range ds {
			if first, dup := seen[d.name]; dup {
				problems = append(problems, fmt.Sprintf("%s: agent %s is defined twice: here and in %s:%d", d.file, d.name, first.file, first.line))
				continue
			}
			seen[d.name] = d
			docs = append(docs, d)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	slices.SortFunc(docs, func(a, b *agentDoc) int { return strings.Compare(a.name, b.name) })
	return docs, nil
}

// readAgentDocs reads the documents of one file (- for stdin).
func readAgentDocs(path string, stdin io.Reader) ([]*agentDoc, error) {
	data, path, err := readInput(path, stdin)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*agentDoc
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("%s is not YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].ShortTag() == "!!null") {
			continue // an empty document
		}
		d, err := decodeAgentDoc(path, n.Content[0])
		if err != nil {
			return nil, err
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s is empty: an agent file holds the agent's fields (%s)", path, codeFieldNames())
	}
	return docs, nil
}

// decodeAgentDoc reads one document, strictly: an unknown field, a value of the
// wrong type or a missing agent_name is an error naming the file, the agent and
// the field.
func decodeAgentDoc(path string, n *yaml.Node) (*agentDoc, error) {
	d := &agentDoc{file: path, line: n.Line, fields: map[string]json.RawMessage{}}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: an agent is a mapping of its fields (%s)", path, n.Line, codeFieldNames())
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "agent_name" && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" {
			d.name = agentd.NormalizeName(v.Value)
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := lookupField(k.Value)
		if !ok {
			return nil, fmt.Errorf("%s: line %d: unknown field %q; an agent has %s", d.where(), k.Line, k.Value, codeFieldNames())
		}
		if _, twice := d.fields[f.name]; twice {
			return nil, fmt.Errorf("%s: line %d: %s is given twice", d.where(), k.Line, f.name)
		}
		raw, err := fieldJSON(f, v)
		if err != nil {
			return nil, fmt.Errorf("%s: line %d: %s: %s", d.where(), v.Line, f.name, err)
		}
		d.fields[f.name] = raw
	}
	if _, ok := d.fields["agent_name"]; !ok {
		return nil, fmt.Errorf("%s:%d: an agent needs agent_name: its name on the server", path, n.Line)
	}
	if d.name == "" {
		return nil, fmt.Errorf("%s:%d: agent_name must contain at least one letter or digit", path, n.Line)
	}
	return d, nil
}

// fieldJSON is the JSON the API takes for the value v of field f.
func fieldJSON(f agentField, v *yaml.Node) (json.RawMessage, error) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	null := v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null"
	switch f.kind {
	case kindJSON:
		return yamlToJSON(v)
	case kindString:
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
			return nil, fmt.Errorf("want a string, not %s (quote it)", yamlKind(v))
		}
		return marshalJSON(v.Value)
	case kindInt:
		var n int
		if null || v.Decode(&n) != nil {
			return nil, fmt.Errorf("want an integer, not %s", yamlKind(v))
		}
		return marshalJSON(n)
	case kindFloat:
		var x float64
		if null || v.Decode(&x) != nil || math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("want a number, not %s", yamlKind(v))
		}
		return marshalJSON(x)
	case kindBool:
		var b bool
		if null || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
			return nil, fmt.Errorf("want true or false, not %s", yamlKind(v))
		}
		return marshalJSON(b)
	case kindDemos:
		if v.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("want a list of {input, output}, not %s", yamlKind(v))
		}
		demos := []client.Demonstration{}
		for i, item := range v.Content {
			d, err := decodeDemo(item)
			if err != nil {
				return nil, fmt.Errorf("[%d] (line %d): %s", i, item.Line, err)
			}
			demos = append(demos, d)
		}
		return marshalJSON(demos)
	}
	return nil, fmt.Errorf("unknown kind of field")
}

func decodeDemo(n *yaml.Node) (client.Demonstration, error) {
	var d client.Demonstration
	if n.Kind != yaml.MappingNode {
		return d, fmt.Errorf("want {input, output}, not %s", yamlKind(n))
	}
	var in, out bool
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
			return d, fmt.Errorf("%s: want a string, not %s (quote it)", k.Value, yamlKind(v))
		}
		switch k.Value {
		case "input":
			d.Input, in = v.Value, true
		case "output":
			d.Output, out = v.Value, true
		default:
			return d, fmt.Errorf("unknown field %q; a demonstration has input and output", k.Value)
		}
	}
	if !in || !out {
		return d, fmt.Errorf("a demonstration needs input and output")
	}
	return d, nil
}

// yamlKind says in words what a YAML value is: `the string "hot"`, `a list`.
func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!null":
		return "nothing (null)"
	case "!!str":
		return fmt.Sprintf("the string %q", truncate(n.Value, 40))
	case "!!bool":
		return "the boolean " + n.Value
	}
	return n.Value
}

// marshalJSON is json.Marshal without HTML escaping.
func marshalJSON(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// yamlToJSON turns a YAML value into the JSON it means. Numbers keep their text
// when it is JSON already, so 1.10 stays 1.10.
func yamlToJSON(n *yaml.Node) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := writeYAMLAsJSON(&b, n, 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeYAMLAsJSON(b *bytes.Buffer, n *yaml.Node, depth int) error {
	if depth > 100 {
		return fmt.Errorf("nested too deeply")
	}
	switch n.Kind {
	case yaml.DocumentNode:
		return writeYAMLAsJSON(b, n.Content[0], depth+1)
	case yaml.AliasNode:
		return writeYAMLAsJSON(b, n.Alias, depth+1)
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
				return fmt.Errorf("line %d: a key must be a plain value", k.Line)
			}
			if i > 0 {
				b.WriteByte(',')
			}
			s, _ := marshalJSON(k.Value)
			b.Write(s)
			b.WriteByte(':')
			if err := writeYAMLAsJSON(b, n.Content[i+1], depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeYAMLAsJSON(b, item, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			b.WriteString("null")
		case "!!bool":
			var v bool
			if err := n.Decode(&v); err != nil {
				return fmt.Errorf("line %d: %q is not a boolean", n.Line, n.Value)
			}
			b.WriteString(strconv.FormatBool(v))
		case "!!int", "!!float":
			if isJSONNumber(n.Value) {
				b.WriteString(n.Value)
				return nil
			}
			var v float64
			if err := n.Decode(&v); err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
				return fmt.Errorf("line %d: %s is not a number JSON can hold", n.Line, n.Value)
			}
			b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		default: // strings, and timestamps and the like as their text
			s, _ := marshalJSON(n.Value)
			b.Write(s)
		}
	}
	return nil
}

func isJSONNumber(s string) bool {
	if s == "" || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil
}

// jsonToYAML turns JSON into a YAML value of the same meaning, keeping the order
// of keys and the text of numbers; strings of several lines are block scalars.
func jsonToYAML(raw []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	n, err := jsonValueNode(dec)
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return n, nil
}

func jsonValueNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := jsonValueNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, stringNode(kt.(string)), v)
			}
			_, err := dec.Token()
			if len(n.Content) == 0 {
				n.Style = yaml.FlowStyle
			}
			return n, err
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonValueNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token()
			if len(n.Content) == 0 {
				n.Style = yaml.FlowStyle
			}
			return n, err
		}
	case string:
		return stringNode(t), nil
	case json.Number:
		return numberNode(t.String()), nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected %v", tok)
}

// stringNode is s as a YAML string: a literal block when it has several lines.
func stringNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.Contains(strings.TrimRight(s, "\n"), "\n") {
		n.Style = yaml.LiteralStyle
	}
	return n
}

// numberNode is a number's text as a YAML number that reads back as the same text.
func numberNode(text string) *yaml.Node {
	tag := "!!float"
	if !strings.ContainsAny(text, ".eE") {
		tag = "!!int"
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: text}
}

// agentYAML is an agent as an agent file: every field, in codeFields' order.
func agentYAML(a *client.Agent) (*yaml.Node, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	fields := serverFields(a)
	for _, f := range codeFields {
		var v *yaml.Node
		var err error
		switch f.kind {
		case kindFloat:
			v = numberNode(strconv.FormatFloat(a.Temperature, 'f', -1, 64))
		case kindDemos:
			v = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for _, d := range a.Demonstrations {
				v.Content = append(v.Content, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map",
					Content: []*yaml.Node{stringNode("input"), stringNode(d.Input), stringNode("output"), stringNode(d.Output)}})
			}
			if len(v.Content) == 0 {
				v.Style = yaml.FlowStyle
			}
		default:
			v, err = jsonToYAML(fields[f.name])
		}
		if err != nil {
			return nil, fmt.Errorf("agent %s: %s: %w", a.Name, f.name, err)
		}
		doc.Content = append(doc.Content, stringNode(f.name), v)
	}
	return doc, nil
}

// encodeYAML writes documents as a YAML stream (--- between them).
func encodeYAML(w io.Writer, docs ...*yaml.Node) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return err
		}
	}
	return enc.Close()
}

// serverFields is an agent as the server has it, as the JSON of each field of an
// agent file.
func serverFields(a *client.Agent) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	put := func(name string, v any) { m[name], _ = marshalJSON(v) }
	put("agent_name", a.Name)
	put("agent_description", a.Description)
	put("model", a.BaseModel)
	put("status", a.Status)
	put("max_token", a.MaxToken)
	put("temperature", a.Temperature)
	put("conversation_saving_enabled", a.ConversationSavingEnabled)
	put("instructions", a.SystemPrompt)
	demos := a.Demonstrations
	if demos == nil {
		demos = []client.Demonstration{}
	}
	put("demonstrations", demos)
	m["tools"], m["response_format"] = json.RawMessage("[]"), json.RawMessage("null")
	if len(a.Tools) > 0 {
		m["tools"] = a.Tools
	}
	if len(a.ResponseFormat) > 0 {
		m["response_format"] = a.ResponseFormat
	}
	put("canary", a.Canary)
	return m
}

// readInput reads the file at path, or stdin for "-", and names it for errors.
func readInput(path string, stdin io.Reader) (data []byte, name string, err error) {
	if path == "-" {
		data, err = io.ReadAll(stdin)
		return data, "stdin", err
	}
	data, err = os.ReadFile(path)
	return data, path, err
}
