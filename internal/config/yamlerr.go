package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fileError is the error of a configuration file (data) that does not decode: one
// line per problem, each naming the file, the line, the entry and what is wrong in
// agentd's words (an unknown field and the fields that entry has; a value that is
// not of the field's type) rather than the YAML library's Go type names.
func fileError(file string, data []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		root = yaml.Node{} // not YAML at all: the library's message is all there is
	}
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = fmt.Errorf("config %s: %s", file, describeYAML(&root, m))
	}
	return errors.Join(errs...)
}

var (
	yamlLine     = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknown  = regexp.MustCompile("^field (\\S+) not found in type (\\S+)$")
	yamlBadValue = regexp.MustCompile("^cannot unmarshal !!(\\w+) (?:`(.*)` )?into (\\S+)$")
)

// describeYAML rewrites one of the YAML library's messages about the document
// root (nil Kind: the file is not YAML).
func describeYAML(root *yaml.Node, msg string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return "not valid YAML: " + msg
	}
	line, _ := strconv.Atoi(m[1])
	rest := m[2]
	if root.Kind == 0 {
		return fmt.Sprintf("line %d: not valid YAML: %s", line, rest)
	}
	if u := yamlUnknown.FindStringSubmatch(rest); u != nil {
		where := "the top level"
		if p, ok := findKey(root, line, u[1]); ok && p.container() != "" {
			where = p.container()
		}
		known := fieldsOf(u[2])
		if len(known) == 0 {
			return fmt.Sprintf("line %d: %s: unknown field %q (not found)", line, where, u[1])
		}
		return fmt.Sprintf("line %d: %s: unknown field %q (not found among: %s)", line, where, u[1], strings.Join(known, ", "))
	}
	if b := yamlBadValue.FindStringSubmatch(rest); b != nil {
		p := findValue(root, line, b[1], b[2])
		what := strconv.Quote(b[2])
		switch b[1] {
		case "seq":
			what = "a list"
		case "map":
			what = "a mapping"
		}
		return fmt.Sprintf("line %d: %s%s is not %s", line, p.prefix(), what, yamlKind(b[3]))
	}
	p := findMentioned(root, line, rest)
	return fmt.Sprintf("line %d: %s%s", line, p.prefix(), rest)
}

// yamlPath is where a node is in the document: its keys and list positions, each
// list entry with its name or id when it has one ("models[0] \"m\"").
type yamlPath []string

// String writes the path as Validate names entries: a labelled list entry ends
// with ": ", other steps are joined with dots.
func (p yamlPath) String() string {
	var b strings.Builder
	for i, s := range p {
		if i > 0 {
			if strings.HasSuffix(p[i-1], `"`) {
				b.WriteString(": ")
			} else if !strings.HasPrefix(s, "[") {
				b.WriteString(".")
			}
		}
		b.WriteString(s)
	}
	return b.String()
}

// container is the path without its last step: the entry a key is in.
func (p yamlPath) container() string {
	if len(p) == 0 {
		return ""
	}
	return p[:len(p)-1].String()
}

// prefix is the path followed by ": ", or "" for no path.
func (p yamlPath) prefix() string {
	if len(p) == 0 {
		return ""
	}
	return p.String() + ": "
}

// yamlEntry is a value of the document and its path: a mapping's key and value
// (Key set), or a list's item.
type yamlEntry struct {
	path     yamlPath
	key, val *yaml.Node
}

// entriesOn lists the document's entries whose key or value starts on line,
// outermost first.
func entriesOn(root *yaml.Node, line int) []yamlEntry {
	var out []yamlEntry
	var walk func(n *yaml.Node, p yamlPath)
	walk = func(n *yaml.Node, p yamlPath) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, p)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				kp := append(p[:len(p):len(p)], k.Value)
				if k.Line == line || v.Line == line {
					out = append(out, yamlEntry{kp, k, v})
				}
				walk(v, kp)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				step := fmt.Sprintf("[%d]", i)
				if label := entryLabel(c); label != "" {
					step += " " + strconv.Quote(label)
				}
				cp := append(p[:len(p):len(p)], step)
				if c.Line == line {
					out = append(out, yamlEntry{cp, nil, c})
				}
				walk(c, cp)
			}
		}
	}
	walk(root, nil)
	return out
}

// findKey is the path of the key named name on line.
func findKey(root *yaml.Node, line int, name string) (yamlPath, bool) {
	for _, e := range entriesOn(root, line) {
		if e.key != nil && e.key.Line == line && e.key.Value == name {
			return e.path, true
		}
	}
	return nil, false
}

// findValue is the path of the innermost value on line that a message is about:
// of YAML kind tag (seq, map) or the scalar value.
func findValue(root *yaml.Node, line int, tag, value string) yamlPath {
	kind := map[string]yaml.Kind{"seq": yaml.SequenceNode, "map": yaml.MappingNode}[tag]
	entries := entriesOn(root, line)
	for i := len(entries) - 1; i >= 0; i-- { // the innermost: a list's entry, not the list
		e := entries[i]
		if e.val.Line != line {
			continue
		}
		if (kind != 0 && e.val.Kind == kind) || (kind == 0 && e.val.Kind == yaml.ScalarNode && e.val.Value == value) {
			return e.path
		}
	}
	return nil
}

// findMentioned is the path of the scalar on line whose quoted value msg
// mentions, else of the innermost key on line.
func findMentioned(root *yaml.Node, line int, msg string) yamlPath {
	entries := entriesOn(root, line)
	for _, e := range entries {
		if e.val.Kind == yaml.ScalarNode && e.val.Line == line && strings.Contains(msg, strconv.Quote(e.val.Value)) {
			return e.path
		}
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; e.key != nil && e.key.Line == line {
			return e.path
		}
	}
	return nil
}

// entryLabel is the name or id of a list entry that is a mapping, or "".
func entryLabel(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; (k == "name" || k == "id") && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// yamlKind says in words what a value of the Go type named goType is.
func yamlKind(goType string) string {
	t := strings.TrimLeft(goType, "*")
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case strings.HasPrefix(t, "config."):
		return "a mapping of settings"
	}
	return "a " + t
}

// fieldsOf lists the YAML fields of the configuration struct type named goType
// ("config.Provider"), or nil when it is not one.
func fieldsOf(goType string) []string {
	t := configTypes(reflect.TypeOf(Config{}), map[string]reflect.Type{})[strings.TrimLeft(goType, "*")]
	if t == nil {
		return nil
	}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "-" && name != "" {
			names = append(names, name)
		}
	}
	return names
}

// configTypes adds t and every struct type reachable from its fields to seen,
// by their Go names.
func configTypes(t reflect.Type, seen map[string]reflect.Type) map[string]reflect.Type {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return configTypes(t.Elem(), seen)
	case reflect.Struct:
		if seen[t.String()] != nil {
			return seen
		}
		seen[t.String()] = t
		for i := range t.NumField() {
			configTypes(t.Field(i).Type, seen)
		}
	}
	return seen
}
