package config_test

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/config"
)

// TestFileErrors: a file that does not decode is refused with one line per
// problem, each naming the file, the line, the entry and what is wrong, in
// agentd's words rather than the YAML library's Go types.
func TestFileErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // lines of the error, after "config FILE: "
	}{
		{"unknown top-level field", "adress: 0.0.0.0:1\n",
			[]string{`line 1: the top level: unknown field "adress" (not found among: addr, admin_addr, db,`}},
		{"unknown field of a list entry", "providers:\n  - name: up\n    kind: openai\n    base_ur1: http://x\n",
			[]string{`line 4: providers[0] "up": unknown field "base_ur1" (not found among: name, kind, base_url,`}},
		{"unknown field in a flow mapping", "models:\n  - {id: m, provider: offline, contex_window: 10}\n",
			[]string{`line 2: models[0] "m": unknown field "contex_window" (not found among: id, provider,`}},
		{"unknown nested field", "limits:\n  session_wiat: 5s\n",
			[]string{`line 2: limits: unknown field "session_wiat" (not found among: max_body_bytes,`}},
		{"a string for an integer", "models:\n  - id: big\n    context_window: lots\n",
			[]string{`line 3: models[0] "big": context_window: "lots" is not an integer`}},
		{"a list for an integer, in a flow mapping", "models:\n  - {id: b, max_output_tokens: [1]}\n",
			[]string{`line 2: models[0] "b": max_output_tokens: a list is not an integer`}},
		{"a mapping for a list", "models:\n  - id: m\n    fallbacks: {a: b}\n",
			[]string{`line 3: models[0] "m": fallbacks: a mapping is not a list`}},
		{"a word for a number", "models:\n  - id: m\n    price: {input: cheap}\n",
			[]string{`line 3: models[0] "m": price.input: "cheap" is not a number`}},
		{"a word for true or false", "providers:\n  - {name: a, kind: anthropic, drop_params: maybe}\n",
			[]string{`line 2: providers[0] "a": drop_params: "maybe" is not true or false`}},
		{"a bad duration", "limits:\n  run_timeout: soon\n",
			[]string{`line 2: limits.run_timeout: "soon" is not a duration like 30s or 2m`}},
		{"an entry without a name", "providers:\n  - kind: openai\n    timeout: 5 parsecs\n",
			[]string{`line 3: providers[0].timeout: "5 parsecs" is not a duration`}},
		{"every problem, one line each", "models:\n  - id: a\n    context_window: x\n  - id: b\n    max_output_tokens: y\n",
			[]string{`line 3: models[0] "a": context_window: "x" is not an integer`, `line 5: models[1] "b": max_output_tokens: "y" is not an integer`}},
		{"not YAML", "models:\n  - id: a\n   bad: [\n", []string{"line 1: not valid YAML: did not find expected '-' indicator"}},
		{"a tab", "limits:\n\trun_timeout: 5s\n", []string{"line 2: not valid YAML: found character that cannot start any token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, tt.yaml)
			_, err := config.Load(config.Overrides{ConfigFile: file}, env(nil))
			if err == nil {
				t.Fatal("Load succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("error has %d lines, want %d:\n%s", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], "config "+file+": "+w) {
					t.Errorf("line %d:\n  %s\nwant it to start with\n  config FILE: %s", i, lines[i], w)
				}
				for _, goName := range []string{"config.", "!!str", "unmarshal", "interface {}"} {
					if strings.Contains(lines[i], goName) {
						t.Errorf("line %d names the decoder's internals (%q): %s", i, goName, lines[i])
					}
				}
			}
		})
	}
}
