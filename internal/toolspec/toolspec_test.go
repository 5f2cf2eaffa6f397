package toolspec

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
)

func violation(t *testing.T, err error) (loc, typ string) {
	t.Helper()
	var e *agentd.Error
	if !errors.As(err, &e) || len(e.Violations) != 1 {
		t.Fatalf("err = %v, want one violation", err)
	}
	parts := make([]string, len(e.Violations[0].Loc))
	for i, p := range e.Violations[0].Loc {
		parts[i] = fmt.Sprint(p)
	}
	return strings.Join(parts, "."), e.Violations[0].Type
}

func TestTools(t *testing.T) {
	strict := true
	got, err := Tools([]byte(`[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{ "type" : "object" },"strict":true}},
		{"type":"function","function":{"name":"now","parameters":null}}]`), "body", "tools")
	if err != nil {
		t.Fatal(err)
	}
	want := []llm.Tool{{Name: "get_weather", Description: "d", Parameters: []byte(`{"type":"object"}`), Strict: &strict}, {Name: "now"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Tools = %+v, want %+v", got, want)
	}
	bad := []struct{ raw, loc, typ string }{
		{`{}`, "body.tools", "list_type"},
		{`[3]`, "body.tools.0", "model_attributes_type"},
		{`[{"function":{"name":"f"}}]`, "body.tools.0.type", "missing"},
		{`[{"type":"code_interpreter"}]`, "body.tools.0.type", "literal_error"},
		{`[{"type":"function"}]`, "body.tools.0.function", "missing"},
		{`[{"type":"function","function":{}}]`, "body.tools.0.function.name", "missing"},
		{`[{"type":"function","function":{"name":""}}]`, "body.tools.0.function.name", "string_pattern_mismatch"},
		{`[{"type":"function","function":{"name":"` + strings.Repeat("x", 65) + `"}}]`, "body.tools.0.function.name", "string_pattern_mismatch"},
		{`[{"type":"function","function":{"name":"f","parameters":"object"}}]`, "body.tools.0.function.parameters", "model_attributes_type"},
		{`[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]`, "body.tools.1.function.name", "value_error"},
		{`[` + strings.Repeat(`{"type":"function","function":{"name":"f"}},`, MaxTools) + `{}]`, "body.tools", "too_long"},
	}
	for _, b := range bad {
		_, err := Tools([]byte(b.raw), "body", "tools")
		if loc, typ := violation(t, err); loc != b.loc || typ != b.typ {
			t.Errorf("Tools(%.60s) = %s %s, want %s %s", b.raw, loc, typ, b.loc, b.typ)
		}
	}
}

func TestChoice(t *testing.T) {
	for raw, want := range map[string]llm.ToolChoice{
		`"none"`: {Mode: "none"}, `"auto"`: {Mode: "auto"}, `"required"`: {Mode: "required"},
		`{"type":"function","function":{"name":"f"}}`: {Mode: "function", Name: "f"},
	} {
		got, err := Choice([]byte(raw), "body", "tool_choice")
		if err != nil || *got != want {
			t.Errorf("Choice(%s) = %+v, %v, want %+v", raw, got, err, want)
		}
	}
	for raw, wantLoc := range map[string]string{
		`"any"`: "body.tool_choice", `3`: "body.tool_choice", `{"function":{"name":"f"}}`: "body.tool_choice.type",
		`{"type":"function"}`: "body.tool_choice.function.name", `{"type":"tool","name":"f"}`: "body.tool_choice.type",
	} {
		_, err := Choice([]byte(raw), "body", "tool_choice")
		if loc, _ := violation(t, err); loc != wantLoc {
			t.Errorf("Choice(%s) refused at %s, want %s", raw, loc, wantLoc)
		}
	}
}

func TestFormat(t *testing.T) {
	if f, err := Format([]byte(`{"type":"text"}`)); f != nil || err != nil {
		t.Errorf("text = %+v, %v, want nothing", f, err)
	}
	if f, err := Format([]byte(`{"type":"json_object"}`)); err != nil || !reflect.DeepEqual(f, &llm.ResponseFormat{Type: llm.FormatJSONObject}) {
		t.Errorf("json_object = %+v, %v", f, err)
	}
	f, err := Format([]byte(`{"type":"json_schema","json_schema":{"name":"sum","description":"d","schema":{"type": "object"},"strict":false}}`))
	no := false
	if want := (&llm.ResponseFormat{Type: llm.FormatJSONSchema, Name: "sum", Description: "d", Schema: []byte(`{"type":"object"}`), Strict: &no}); err != nil || !reflect.DeepEqual(f, want) {
		t.Errorf("json_schema = %+v, %v, want %+v", f, err, want)
	}
	for raw, wantLoc := range map[string]string{
		`"json"`:                 "response_format",
		`{}`:                     "response_format.type",
		`{"type":"xml"}`:         "response_format.type",
		`{"type":"json_schema"}`: "response_format.json_schema",
		`{"type":"json_schema","json_schema":{"schema":{}}}`:               "response_format.json_schema.name",
		`{"type":"json_schema","json_schema":{"name":"a b"}}`:              "response_format.json_schema.name",
		`{"type":"json_schema","json_schema":{"name":"a","schema":["x"]}}`: "response_format.json_schema.schema",
	} {
		_, err := Format([]byte(raw), "response_format")
		if loc, _ := violation(t, err); loc != wantLoc {
			t.Errorf("Format(%s) refused at %s, want %s", raw, loc, wantLoc)
		}
	}
}
