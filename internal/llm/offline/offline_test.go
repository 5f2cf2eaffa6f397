package offline

import (
	"context"
	"errors"
	"go/parser"
	"go/token"
	"math"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/tokens"
)

// words counts whitespace-separated words: a stand-in tokenizer whose counts are
// easy to check by eye.
func words(s string) int { return len(strings.Fields(s)) }

// firstWords returns the prefix of s that holds its first n words.
func firstWords(s string, n int) string {
	end := 0
	for i, w := range strings.Fields(s) {
		if i == n {
			break
		}
		end = strings.Index(s[end:], w) + end + len(w)
	}
	return s[:end]
}

var wordModel = New(Options{Count: words, Truncate: firstWords})

func sys(s string) llm.Message  { return llm.Message{Role: llm.RoleSystem, Content: s} }
func user(s string) llm.Message { return llm.Message{Role: llm.RoleUser, Content: s} }
func asst(s string) llm.Message { return llm.Message{Role: llm.RoleAssistant, Content: s} }

// demo returns a demonstration as the prompt builder lays it out.
func demo(in, out string) []llm.Message {
	return []llm.Message{
		{Role: llm.RoleUser, Content: in, Example: true},
		{Role: llm.RoleAssistant, Content: out, Example: true},
	}
}

func join(parts ...[]llm.Message) []llm.Message {
	var all []llm.Message
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

func one(m ...llm.Message) []llm.Message { return m }

func noMatch(turns int) string {
	unit := "turns"
	if turns == 1 {
		unit = "turn"
	}
	return "No demonstration of this agent matches your message. (agentd offline model: it answers " +
		"only from the agent's demonstrations; this conversation has " + strconv.Itoa(turns) + " earlier " + unit + ".)"
}

func TestComplete(t *testing.T) {
	demos := join(
		one(sys("You are a support agent.")),
		demo("How do I reset my password?", "Open Settings, then Security, then Reset password."),
		demo("What are your opening hours?", "We are open 9:00 to 17:00, Monday to Friday."),
		demo("Where is my order?", "Track it under Orders in your account."),
	)
	tests := []struct {
		name       string
		msgs       []llm.Message
		maxTokens  int
		wantText   string
		wantFinish string
	}{
		{
			name:       "exact input",
			msgs:       join(demos, one(user("Where is my order?"))),
			wantText:   "Track it under Orders in your account.",
			wantFinish: "stop",
		},
		{
			name:       "exact after normalization",
			msgs:       join(demos, one(user("  where IS my order  "))),
			wantText:   "Track it under Orders in your account.",
			wantFinish: "stop",
		},
		{
			name:       "rephrasing picks the closest",
			msgs:       join(demos, one(user("I forgot my password, how can I reset it?"))),
			wantText:   "Open Settings, then Security, then Reset password.",
			wantFinish: "stop",
		},
		{
			name:       "below threshold says so",
			msgs:       join(demos, one(user("Tell me a joke about penguins"))),
			wantText:   noMatch(0),
			wantFinish: "stop",
		},
		{
			name: "earlier turns are counted",
			msgs: join(demos, one(
				user("Tell me a joke"), asst(noMatch(0)),
				user("Please?"), asst(noMatch(1)),
				user("Sing a song"),
			)),
			wantText:   noMatch(2),
			wantFinish: "stop",
		},
		{
			name:       "one earlier turn",
			msgs:       join(demos, one(user("hi"), asst("hello"), user("Tell me a joke"))),
			wantText:   noMatch(1),
			wantFinish: "stop",
		},
		{
			name: "history is not a demonstration",
			msgs: join(demos, one(
				user("Tell me a joke"), asst("Why did the penguin cross the ice?"),
				user("Tell me a joke"),
			)),
			wantText:   noMatch(1),
			wantFinish: "stop",
		},
		{
			name:       "history does not hide a match",
			msgs:       join(demos, one(user("hi"), asst("hello"), user("opening hours?"))),
			wantText:   "We are open 9:00 to 17:00, Monday to Friday.",
			wantFinish: "stop",
		},
		{
			name:       "no demonstrations",
			msgs:       one(sys("Be brief."), user("Hello")),
			wantText:   "This agent has no demonstrations to answer from. (agentd offline model: it answers only from the agent's demonstrations; this conversation has 0 earlier turns.)",
			wantFinish: "stop",
		},
		{
			name:       "unanswered example is ignored",
			msgs:       one(llm.Message{Role: llm.RoleUser, Content: "ping", Example: true}, user("ping")),
			wantText:   "This agent has no demonstrations to answer from. (agentd offline model: it answers only from the agent's demonstrations; this conversation has 0 earlier turns.)",
			wantFinish: "stop",
		},
		{
			name:       "ties go to the earliest",
			msgs:       join(demo("red apple", "first"), demo("green apple", "second"), one(user("apple"))),
			wantText:   "first",
			wantFinish: "stop",
		},
		{
			name:       "same input twice answers with the first",
			msgs:       join(demo("ping", "pong"), demo("ping", "PONG"), one(user("ping"))),
			wantText:   "pong",
			wantFinish: "stop",
		},
		{
			name:       "exact beats same proportions",
			msgs:       join(demo("ping ping", "double"), demo("ping", "single"), one(user("Ping!"))),
			wantText:   "single",
			wantFinish: "stop",
		},
		{
			name:       "punctuation-only exact",
			msgs:       join(demo("?", "Ask me anything."), one(user(" ? "))),
			wantText:   "Ask me anything.",
			wantFinish: "stop",
		},
		{
			name:       "unicode words",
			msgs:       join(demo("Où est la GARE ?", "Tout droit."), demo("日本 語", "はい"), one(user("où est la gare"))),
			wantText:   "Tout droit.",
			wantFinish: "stop",
		},
		{
			name:       "max tokens truncates",
			msgs:       join(demos, one(user("What are your opening hours?"))),
			maxTokens:  3,
			wantText:   "We are open",
			wantFinish: "length",
		},
		{
			name:       "max tokens exactly fits",
			msgs:       join(demos, one(user("Where is my order?"))),
			maxTokens:  7,
			wantText:   "Track it under Orders in your account.",
			wantFinish: "stop",
		},
		{
			name:       "max tokens truncates the no-match reply",
			msgs:       join(demos, one(user("Sing"))),
			maxTokens:  2,
			wantText:   "No demonstration",
			wantFinish: "length",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &llm.Request{Model: "offline", Messages: tt.msgs, MaxTokens: tt.maxTokens}
			resp, err := wordModel.Complete(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Text != tt.wantText {
				t.Errorf("Text = %q, want %q", resp.Text, tt.wantText)
			}
			if resp.FinishReason != tt.wantFinish {
				t.Errorf("FinishReason = %q, want %q", resp.FinishReason, tt.wantFinish)
			}
			want := llm.Usage{
				InputTokens:  llm.CountMessages(words, tt.msgs),
				OutputTokens: words(tt.wantText),
				Source:       "provider",
			}
			if resp.Usage != want {
				t.Errorf("Usage = %+v, want %+v", resp.Usage, want)
			}
			if resp.Model != "offline" {
				t.Errorf("Model = %q, want the request's model", resp.Model)
			}
		})
	}
}

func TestCompleteErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		req      *llm.Request
		wantKind llm.Kind
		wantErr  error
	}{
		{"nil request", context.Background(), nil, llm.KindPermanent, nil},
		{"no messages", context.Background(), &llm.Request{}, llm.KindPermanent, nil},
		{"last is assistant", context.Background(), &llm.Request{Messages: join(one(user("hi")), one(asst("hello")))}, llm.KindPermanent, nil},
		{"last is system", context.Background(), &llm.Request{Messages: one(sys("Be brief."))}, llm.KindPermanent, nil},
		{"context done", cancelled, &llm.Request{Messages: one(user("hi"))}, llm.KindRetryable, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := wordModel.Complete(tt.ctx, tt.req)
			if resp != nil {
				t.Errorf("resp = %+v, want nil", resp)
			}
			var e *llm.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *llm.Error", err)
			}
			if e.Kind != tt.wantKind {
				t.Errorf("Kind = %v, want %v", e.Kind, tt.wantKind)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.wantErr)
			}
		})
	}
}

func TestSimilarity(t *testing.T) {
	tests := []struct {
		name      string
		a, b      string
		wantScore float64
		wantExact bool
	}{
		{"identical", "Where is my order?", "Where is my order?", 1, true},
		{"case and punctuation", "WHERE is... my order", "where is my order?!", 1, true},
		{"same words reordered", "my order is where", "where is my order", 1, false},
		{"proportional", "ping ping", "ping", 1, false},
		{"disjoint", "hello there", "goodbye now", 0, false},
		{"half shared", "red blue", "red green", 0.5, false},
		{"repeated word weighs more", "red red blue", "red", 2 / math.Sqrt(5), false},
		{"rephrasing", "reset my password", "how do I reset a password?", 1, true},
		{"rephrasing with more", "reset my password", "how do I reset the password of my account?", 2 / math.Sqrt(6), false},
		{"no words both equal", " ?! ", "?!", 1, true},
		{"no words both different", "?", "!", 0, false},
		{"no words one side", "?", "why", 0, false},
		{"digits are words", "order 123", "order 123", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			score, exact := similarity(newText(tt.a), newText(tt.b))
			if math.Abs(score-tt.wantScore) > 1e-12 || exact != tt.wantExact {
				t.Errorf("similarity(%q, %q) = %v, %v; want %v, %v", tt.a, tt.b, score, exact, tt.wantScore, tt.wantExact)
			}
			if rs, re := similarity(newText(tt.b), newText(tt.a)); rs != score || re != exact {
				t.Errorf("not symmetric: %v, %v reversed", rs, re)
			}
		})
	}
}

// TestRealTokenizer checks usage and truncation with the o200k counter that
// production wires in.
func TestRealTokenizer(t *testing.T) {
	c := tokens.O200k()
	m := New(Options{Count: c.Count, Truncate: c.Truncate})
	msgs := join(
		one(sys("You answer in French.")),
		demo("Good morning", "Bonjour, comment allez-vous aujourd'hui ?"),
		one(user("good morning!")),
	)
	resp, err := m.Complete(context.Background(), &llm.Request{Model: "offline", Messages: msgs, MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	if resp.FinishReason != "length" || !strings.HasPrefix("Bonjour, comment allez-vous aujourd'hui ?", resp.Text) {
		t.Errorf("got %q (%s), want a truncated prefix of the demonstration", resp.Text, resp.FinishReason)
	}
	if got, want := resp.Usage.InputTokens, llm.CountMessages(c.Count, msgs); got != want {
		t.Errorf("InputTokens = %d, want CountMessages = %d", got, want)
	}
	if got := resp.Usage.OutputTokens; got != c.Count(resp.Text) || got > 3 {
		t.Errorf("OutputTokens = %d for %q, want its count, at most 3", got, resp.Text)
	}
}

func TestDeterministic(t *testing.T) {
	req := &llm.Request{Model: "offline", Messages: join(
		demo("alpha beta", "one"), demo("beta gamma", "two"), demo("gamma alpha", "three"),
		one(user("beta")),
	)}
	first, err := wordModel.Complete(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Text != "one" {
		t.Fatalf("Text = %q, want the earliest of the tied demonstrations", first.Text)
	}
	for range 100 {
		resp, err := wordModel.Complete(context.Background(), req)
		if err != nil || !reflect.DeepEqual(*resp, *first) {
			t.Fatalf("got %+v, %v; want %+v", resp, err, first)
		}
	}
}

func TestConcurrent(t *testing.T) {
	c := tokens.O200k()
	m := New(Options{Count: c.Count, Truncate: c.Truncate})
	msgs := join(demo("How do I reset my password?", "Open Settings."), demo("Hours?", "9 to 5."))
	questions := []string{"reset password", "hours", "weather"}
	want := make([]string, len(questions))
	for i, q := range questions {
		resp, err := m.Complete(context.Background(), &llm.Request{Messages: join(msgs, one(user(q)))})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = resp.Text
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				q := (g + i) % len(questions)
				resp, err := m.Complete(context.Background(), &llm.Request{Messages: join(msgs, one(user(questions[q])))})
				if err != nil {
					t.Error(err)
					return
				}
				if resp.Text != want[q] {
					t.Errorf("%q: got %q, want %q", questions[q], resp.Text, want[q])
				}
			}
		})
	}
	wg.Wait()
}

func TestNewRequiresOptions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New with no Count did not panic")
		}
	}()
	New(Options{Truncate: firstWords})
}

// TestImports enforces the package's dependency rule: the standard library and
// internal/llm only, so that the offline model stays a leaf every build can carry.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			std := !strings.Contains(strings.Split(path, "/")[0], ".")
			if !std && path != "github.com/agentd/agentd/internal/llm" {
				t.Errorf("%s imports %s; offline may import only the standard library and internal/llm", name, path)
			}
		}
	}
}

// TestCheckRequest: what the offline model cannot give is refused by name
// before any call; what changes nothing in its answer is taken.
func TestCheckRequest(t *testing.T) {
	tool := []llm.Tool{{Name: "f"}}
	calls := llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c", Name: "f", Arguments: "{}"}}}
	result := llm.Message{Role: llm.RoleTool, ToolCallID: "c", Content: "r"}
	image := llm.Message{Role: llm.RoleUser, Parts: []llm.Part{{Type: llm.PartText, Text: "what?"}, {Type: llm.PartImage, ImageURL: "https://x/y.png"}}}
	cases := []struct {
		name  string
		req   llm.Request
		param string // "" when taken
	}{
		{"sampling and labels", llm.Request{Messages: one(user("hi")), Params: []llm.Param{{Name: "seed", Value: []byte("1")}, {Name: "user", Value: []byte(`"u"`)}, {Name: "n", Value: []byte("1")}}}, ""},
		{"tools it will not call", llm.Request{Messages: one(user("hi")), Tools: tool, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone}}, ""},
		{"a tool conversation so far", llm.Request{Messages: one(user("q"), calls, result, user("and now?"))}, ""},
		{"text parts", llm.Request{Messages: one(llm.Message{Role: llm.RoleUser, Parts: []llm.Part{{Type: llm.PartText, Text: "hi"}}})}, ""},
		{"tools", llm.Request{Messages: one(user("hi")), Tools: tool}, "tools"},
		{"a response format", llm.Request{Messages: one(user("hi")), ResponseFormat: &llm.ResponseFormat{Type: llm.FormatJSONObject}}, "response_format"},
		{"an image", llm.Request{Messages: one(image)}, "messages"},
		{"a tool result to answer", llm.Request{Messages: one(user("q"), calls, result)}, "messages"},
		{"logprobs", llm.Request{Messages: one(user("hi")), Params: []llm.Param{{Name: "logprobs", Value: []byte("true")}}}, "logprobs"},
		{"several choices", llm.Request{Messages: one(user("hi")), Params: []llm.Param{{Name: "n", Value: []byte("2")}}}, "n"},
	}
	for _, tc := range cases {
		err := wordModel.CheckRequest(&tc.req)
		var pe *llm.ParamError
		switch {
		case tc.param == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.param != "" && (!errors.As(err, &pe) || pe.Param != tc.param || pe.Kind != "offline" || pe.Reason == ""):
			t.Errorf("%s: err = %v, want a ParamError for %s", tc.name, err, tc.param)
		}
	}
}
