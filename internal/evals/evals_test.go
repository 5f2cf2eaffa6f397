package evals_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/evals"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"not a list", "input: x\n", "cases.yaml:1: want a list of cases"},
		{"no input", "- expect: {equals: x}\n", `cases.yaml:1: case 1: input: required`},
		{"unknown field", "- name: a\n  input: x\n  expect: {equal: x}\n", `case 1 ("a"): unknown field "equal"`},
		{"bad regex", "- input: x\n  expect: {equals: x}\n- input: y\n  expect: {regex: '('}\n", "cases.yaml:3: case 2: expect.regex:"},
		{"wrong type", "- input: x\n  expect: {max_output_tokens: many}\n", "expect.max_output_tokens: want int"},
		{"no expectation", "- input: x\n  expect: {}\n", "expect: required"},
		{"bad schema", "- input: x\n  expect: {json_schema: {type: obj}}\n", `expect.json_schema: type: unknown type "obj"`},
		{"unsupported keyword", "- input: x\n  expect: {json_schema: {minimum: 1}}\n", "minimum: not supported"},
		{"session turn", "- input: x\n  session: [{user: hi}]\n  expect: {equals: x}\n", "session[0].assistant: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := evals.Parse("cases.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseAndCheck(t *testing.T) {
	cases, err := evals.Parse("cases.yaml", []byte(`
- name: greets
  input: hello
  session: [{user: hi, assistant: hey}]
  expect:
    contains: [Hello, world]
    regex: '^Hello'
    max_output_tokens: 5
    max_cost: 0.001
    max_latency_ms: 100
- input: json please
  expect:
    contains: ok
    json_schema:
      type: object
      required: [status, items]
      properties:
        status: {enum: [ok, fine]}
        items: {type: array, items: {type: integer}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cases[1].Name != "case 2" || cases[0].Source != "cases.yaml" || len(cases[0].Session) != 1 || len(cases[1].Expect.Contains) != 1 {
		t.Fatalf("cases = %+v", cases)
	}
	for _, tc := range []struct {
		name string
		c    int
		o    evals.Observation
		want []string
	}{
		{"passes", 0, evals.Observation{Reply: "Hello, world", OutputTokens: 5, Cost: 1000, LatencyMS: 100}, nil},
		{"fails everything", 0, evals.Observation{Reply: "bye", OutputTokens: 6, Cost: 1001, LatencyMS: 101},
			[]string{`contains: no "Hello"`, `contains: no "world"`, "regex:", "max_output_tokens: 6", "max_cost: cost 0.001001", "max_latency_ms: 101"}},
		{"schema passes", 1, evals.Observation{Reply: ` {"status": "ok", "items": [1, 2.0]} `}, nil},
		{"not json", 1, evals.Observation{Reply: "ok"}, []string{"json_schema: reply is not JSON"}},
		{"required", 1, evals.Observation{Reply: `{"status": "ok"}`}, []string{`required property "items" missing`}},
		{"enum", 1, evals.Observation{Reply: `{"status": "no", "items": []}`}, []string{`contains: no "ok"`, "$.status: not one of the enum's values"}},
		{"items", 1, evals.Observation{Reply: `{"status": "ok", "items": [1, 1.5]}`}, []string{"$.items[1]: want integer, got number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := evals.Check(&cases[tc.c], &tc.o)
			if len(got) != len(tc.want) {
				t.Fatalf("failures = %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("failure %d = %q, want it to contain %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestRun(t *testing.T) {
	cases := evals.FromDemonstrations([]agentd.Demonstration{{Input: "a", Output: "A"}, {Input: "b", Output: "B"}})
	if *cases[0].Expect.Equals != "A" || cases[0].Source != "demonstration" {
		t.Fatalf("cases = %+v", cases)
	}
	var seen []int
	rep, err := evals.Run(context.Background(), cases, func(_ context.Context, c *evals.Case) (*evals.Observation, error) {
		return &evals.Observation{Reply: "A\n", Cost: 5}, nil
	}, time.Now, func(done int, _ *evals.CaseResult) { seen = append(seen, done) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != evals.StatusFailed || rep.Passed != 1 || rep.Failed != 1 || rep.Cost != 10 || len(seen) != 2 || !rep.Cases[0].Passed {
		t.Fatalf("report = %+v, progress %v", rep, seen)
	}
	rep, _ = evals.Run(context.Background(), nil, nil, time.Now, nil)
	if rep.Status != evals.StatusFailed {
		t.Fatalf("no cases: status %q, want failed", rep.Status)
	}
}
