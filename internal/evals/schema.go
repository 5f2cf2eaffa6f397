package evals

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
)

// Schema is the part of JSON Schema that evals check: type (one name or a list),
// properties, required, items and enum. Other keywords are refused rather than
// ignored, so that a case never seems to check what it does not.
type Schema struct {
	Type       []string
	Properties map[string]*Schema
	Required   []string
	Items      *Schema
	Enum       []any // decoded with UseNumber
}

var schemaTypes = []string{"object", "array", "string", "number", "integer", "boolean", "null"}

// ParseSchema reads a schema from JSON.
func ParseSchema(raw json.RawMessage) (*Schema, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return schemaOf(v, "")
}

func schemaOf(v any, at string) (*Schema, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%swant an object", at)
	}
	s := &Schema{}
	for k, x := range m {
		switch k {
		case "type":
			switch t := x.(type) {
			case string:
				s.Type = []string{t}
			case []any:
				for _, e := range t {
					n, ok := e.(string)
					if !ok {
						return nil, fmt.Errorf("%stype: want a name or a list of names", at)
					}
					s.Type = append(s.Type, n)
				}
			default:
				return nil, fmt.Errorf("%stype: want a name or a list of names", at)
			}
			for _, t := range s.Type {
				if !slices.Contains(schemaTypes, t) {
					return nil, fmt.Errorf("%stype: unknown type %q (one of %s)", at, t, strings.Join(schemaTypes, ", "))
				}
			}
		case "properties":
			ps, ok := x.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%sproperties: want an object", at)
			}
			s.Properties = map[string]*Schema{}
			for name, p := range ps {
				ch, err := schemaOf(p, at+"properties."+name+".")
				if err != nil {
					return nil, err
				}
				s.Properties[name] = ch
			}
		case "required":
			rs, ok := x.([]any)
			if !ok {
				return nil, fmt.Errorf("%srequired: want a list of names", at)
			}
			for _, r := range rs {
				n, ok := r.(string)
				if !ok {
					return nil, fmt.Errorf("%srequired: want a list of names", at)
				}
				s.Required = append(s.Required, n)
			}
		case "items":
			ch, err := schemaOf(x, at+"items.")
			if err != nil {
				return nil, err
			}
			s.Items = ch
		case "enum":
			es, ok := x.([]any)
			if !ok || len(es) == 0 {
				return nil, fmt.Errorf("%senum: want a non-empty list", at)
			}
			s.Enum = es
		case "$schema", "title", "description":
			// Words for readers; nothing to check.
		default:
			return nil, fmt.Errorf("%s%s: not supported (evals check type, properties, required, items and enum)", at, k)
		}
	}
	return s, nil
}

// Validate parses reply as JSON and checks it against s. The error says where
// the value differs.
func (s *Schema) Validate(reply string) error {
	var v any
	dec := json.NewDecoder(strings.NewReader(reply))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("reply is not JSON: %v", err)
	}
	if dec.More() {
		return errors.New("reply is not JSON: text after the value")
	}
	return s.check(v, "$")
}

func (s *Schema) check(v any, at string) error {
	if len(s.Type) > 0 && !slices.ContainsFunc(s.Type, func(t string) bool { return isType(v, t) }) {
		return fmt.Errorf("%s: want %s, got %s", at, strings.Join(s.Type, " or "), typeOf(v))
	}
	if len(s.Enum) > 0 && !slices.ContainsFunc(s.Enum, func(e any) bool { return equal(e, v) }) {
		return fmt.Errorf("%s: not one of the enum's values", at)
	}
	switch x := v.(type) {
	case map[string]any:
		for _, r := range s.Required {
			if _, ok := x[r]; !ok {
				return fmt.Errorf("%s: required property %q missing", at, r)
			}
		}
		names := make([]string, 0, len(s.Properties))
		for n := range s.Properties {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if pv, ok := x[n]; ok {
				if err := s.Properties[n].check(pv, at+"."+n); err != nil {
					return err
				}
			}
		}
	case []any:
		if s.Items != nil {
			for i, e := range x {
				if err := s.Items.check(e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func isType(v any, t string) bool {
	switch t {
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		r, ok := new(big.Rat).SetString(n.String())
		return ok && r.IsInt()
	case "number":
		_, ok := v.(json.Number)
		return ok
	}
	return typeOf(v) == t
}

func typeOf(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// equal compares JSON values, numbers by value.
func equal(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		rx, ok1 := new(big.Rat).SetString(x.String())
		ry, ok2 := new(big.Rat).SetString(y.String())
		return ok1 && ok2 && rx.Cmp(ry) == 0
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !equal(xv, yv) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}
