package prompt

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/llm"
	"github.com/agentd/agentd/internal/tokens"
)

// words is a whitespace tokenizer: counts that are easy to check by hand.
func words(s string) int { return len(strings.Fields(s)) }

func turn(u, a string, count func(string) int) agentd.Turn {
	return agentd.Turn{User: u, Assistant: a, UserTokens: count(u), AssistantTokens: count(a)}
}

// history returns n turns of 2 + 3 words, each costing 11 tokens with words.
func history(n int) []agentd.Turn {
	h := make([]agentd.Turn, n)
	for i := range h {
		h[i] = turn(fmt.Sprintf("u%d x", i), fmt.Sprintf("a%d y z", i), words)
	}
	return h
}

func TestCompile(t *testing.T) {
	demos := []agentd.Demonstration{{Input: "hi there", Output: "hello"}, {Input: "bye", Output: "see you soon"}}
	tests := []struct {
		name         string
		instructions string
		demos        []agentd.Demonstration
		want         []llm.Message
	}{
		{"nothing", "", nil, []llm.Message{}},
		{"instructions only", "Be brief.", nil, []llm.Message{{Role: llm.RoleSystem, Content: "Be brief."}}},
		{"demonstrations without instructions", "", demos[:1], []llm.Message{
			{Role: llm.RoleUser, Content: "hi there", Example: true},
			{Role: llm.RoleAssistant, Content: "hello", Example: true},
		}},
		{"both", "Be brief.", demos, []llm.Message{
			{Role: llm.RoleSystem, Content: "Be brief."},
			{Role: llm.RoleUser, Content: "hi there", Example: true},
			{Role: llm.RoleAssistant, Content: "hello", Example: true},
			{Role: llm.RoleUser, Content: "bye", Example: true},
			{Role: llm.RoleAssistant, Content: "see you soon", Example: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Compile(tt.instructions, tt.demos, words)
			if !reflect.DeepEqual(f.Messages, tt.want) {
				t.Errorf("Messages = %+v, want %+v", f.Messages, tt.want)
			}
			if want := llm.CountMessages(words, tt.want) - llm.TokensPerReply; f.Tokens != want {
				t.Errorf("Tokens = %d, want %d", f.Tokens, want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	// Fixed: system "Be brief." (3+2) + demonstration (3+2, 3+1) = 14 tokens. The
	// message "what now" costs 3+2 and the reply primer 3, so a prompt with no
	// history needs 22 tokens; each history() turn adds 11.
	fixed := Compile("Be brief.", []agentd.Demonstration{{Input: "hi there", Output: "hello"}}, words)
	big := turn("tell me everything about the whole history of the world please", "no", words) // 6+11+1 = 18
	tests := []struct {
		name        string
		fixed       *Fixed
		history     []agentd.Turn
		window, max int
		wantKept    int // newest turns kept
		wantTokens  int
	}{
		{name: "no history", fixed: fixed, window: 100, max: 10, wantTokens: 22},
		{name: "no history exact fit", fixed: fixed, window: 32, max: 10, wantTokens: 22},
		{name: "all history fits", fixed: fixed, history: history(3), window: 100, max: 10, wantKept: 3, wantTokens: 55},
		{name: "all history exact fit", fixed: fixed, history: history(3), window: 65, max: 10, wantKept: 3, wantTokens: 55},
		{name: "one token short trims the oldest", fixed: fixed, history: history(3), window: 64, max: 10, wantKept: 2, wantTokens: 44},
		{name: "keeps only the newest", fixed: fixed, history: history(5), window: 45, max: 10, wantKept: 1, wantTokens: 33},
		{name: "room for no turn", fixed: fixed, history: history(3), window: 42, max: 10, wantTokens: 22},
		{name: "max tokens is reserved", fixed: fixed, history: history(3), window: 65, max: 11, wantKept: 2, wantTokens: 44},
		{name: "zero max tokens", fixed: fixed, history: history(3), window: 55, max: 0, wantKept: 3, wantTokens: 55},
		{name: "a big newest turn ends the history", fixed: fixed, history: append(history(2), big), window: 39, max: 0, wantTokens: 22},
		{name: "a big oldest turn is trimmed alone", fixed: fixed, history: append([]agentd.Turn{big}, history(2)...), window: 44, max: 0, wantKept: 2, wantTokens: 44},
		{name: "nil fixed", history: history(1), window: 19, max: 0, wantKept: 1, wantTokens: 19},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{
				Fixed: tt.fixed, History: tt.history, Message: "what now", MessageTokens: 2,
				ContextWindow: tt.window, MaxTokens: tt.max,
			}
			res, err := Build(in)
			if err != nil {
				t.Fatal(err)
			}
			if res.InputTokens != tt.wantTokens {
				t.Errorf("InputTokens = %d, want %d", res.InputTokens, tt.wantTokens)
			}
			if got := llm.CountMessages(words, res.Messages); res.InputTokens != got {
				t.Errorf("InputTokens = %d, but CountMessages = %d", res.InputTokens, got)
			}
			if want := len(tt.history) - tt.wantKept; res.TrimmedTurns != want {
				t.Errorf("TrimmedTurns = %d, want %d", res.TrimmedTurns, want)
			}
			var want []llm.Message
			if tt.fixed != nil {
				want = append(want, tt.fixed.Messages...)
			}
			for _, h := range tt.history[len(tt.history)-tt.wantKept:] {
				want = append(want, llm.Message{Role: llm.RoleUser, Content: h.User}, llm.Message{Role: llm.RoleAssistant, Content: h.Assistant})
			}
			want = append(want, llm.Message{Role: llm.RoleUser, Content: "what now"})
			if !reflect.DeepEqual(res.Messages, want) {
				t.Errorf("Messages =\n%+v\nwant\n%+v", res.Messages, want)
			}
			if cap(res.Messages) != len(res.Messages) {
				t.Errorf("cap(Messages) = %d, len %d: the slice was not sized once", cap(res.Messages), len(res.Messages))
			}
		})
	}
}

func TestBuildDoesNotFit(t *testing.T) {
	fixed := Compile("Be brief.", []agentd.Demonstration{{Input: "hi there", Output: "hello"}}, words) // 14
	tests := []struct {
		name          string
		window, max   int
		message       string
		wantRequired  int
		wantAvailable int
		wantMessage   string
	}{
		{"one token short", 31, 10, "what now", 22, 21,
			"prompt does not fit: instructions, demonstrations and message need 22 tokens; the model allows 31 minus 10 reserved for the reply"},
		{"reply reservation exceeds window", 10, 20, "what now", 22, 0,
			"prompt does not fit: instructions, demonstrations and message need 22 tokens; the model allows 10 minus 20 reserved for the reply"},
		{"long message", 8192, 1000, strings.Repeat("w ", 9000), 9020, 7192,
			"prompt does not fit: instructions, demonstrations and message need 9020 tokens; the model allows 8192 minus 1000 reserved for the reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Build(Input{
				Fixed: fixed, History: history(2), Message: tt.message, MessageTokens: words(tt.message),
				ContextWindow: tt.window, MaxTokens: tt.max,
			})
			if res != nil {
				t.Errorf("res = %+v, want nil", res)
			}
			var e *agentd.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *agentd.Error", err)
			}
			if e.Code != agentd.EInvalid {
				t.Errorf("Code = %q, want %q", e.Code, agentd.EInvalid)
			}
			if e.Message != tt.wantMessage {
				t.Errorf("Message = %q, want %q", e.Message, tt.wantMessage)
			}
			if e.Fields["required_tokens"] != tt.wantRequired || e.Fields["available_tokens"] != tt.wantAvailable {
				t.Errorf("Fields = %v, want required_tokens %d, available_tokens %d", e.Fields, tt.wantRequired, tt.wantAvailable)
			}
		})
	}
}

func TestBuildBadInput(t *testing.T) {
	tests := []struct {
		name        string
		window, max int
	}{
		{"zero window", 0, 0},
		{"negative window", -1, 0},
		{"negative max tokens", 100, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(Input{Message: "hi", MessageTokens: 1, ContextWindow: tt.window, MaxTokens: tt.max})
			if err == nil || agentd.ErrorCode(err) != agentd.EInternal {
				t.Errorf("err = %v, want an internal error", err)
			}
		})
	}
}

// TestBuildCountsLikeCountMessages checks the central property with the production
// tokenizer and with the whitespace one: the tokens Build reports are the tokens of
// the messages it returns.
func TestBuildCountsLikeCountMessages(t *testing.T) {
	counters := map[string]func(string) int{"o200k": tokens.O200k().Count, "words": words}
	demos := []agentd.Demonstration{
		{Input: "Where is my order?", Output: "Track it under Orders in your account."},
		{Input: "¿Dónde está mi pedido?", Output: "Búsquelo en Pedidos. 📦"},
	}
	for name, count := range counters {
		t.Run(name, func(t *testing.T) {
			fixed := Compile(agentd.DefaultInstructions, demos, count)
			var h []agentd.Turn
			for i := range 20 {
				h = append(h, turn(fmt.Sprintf("Question %d: what about 日本?", i), strings.Repeat("answer ", i), count))
			}
			msg := "And now, the final question?"
			for window := 40; window <= 600; window += 7 {
				res, err := Build(Input{Fixed: fixed, History: h, Message: msg, MessageTokens: count(msg), ContextWindow: window, MaxTokens: 16})
				if err != nil {
					if agentd.ErrorCode(err) != agentd.EInvalid {
						t.Fatalf("window %d: %v", window, err)
					}
					continue
				}
				if got := llm.CountMessages(count, res.Messages); res.InputTokens != got {
					t.Fatalf("window %d: InputTokens = %d, CountMessages = %d", window, res.InputTokens, got)
				}
				if res.InputTokens > window-16 {
					t.Fatalf("window %d: InputTokens = %d over budget %d", window, res.InputTokens, window-16)
				}
			}
		})
	}
}

// FuzzBuild checks Build's invariants on arbitrary inputs. Demonstrations and history
// are lines of "input|output"; useO200k picks the production tokenizer.
func FuzzBuild(f *testing.F) {
	f.Add("Be brief.", "hi|hello\nbye|ciao", "q1|a1\nq2 more|a2 much more\nq3|a3", "what now", 64, 8, false)
	f.Add("", "", "", "", 1, 0, true)
	f.Add(agentd.DefaultInstructions, "¿qué?|¡eso! 📦", "日本|語\n|", "and then?", 200, 100, true)
	f.Add("x", "a|b", "c|d", "e", 0, -1, false)
	o200k := tokens.O200k().Count
	f.Fuzz(func(t *testing.T, instructions, demoLines, historyLines, message string, window, maxTokens int, useO200k bool) {
		count := words
		if useO200k {
			count = o200k
		}
		window, maxTokens = window%4096, maxTokens%1024
		var demos []agentd.Demonstration
		for _, line := range lines(demoLines) {
			in, out, _ := strings.Cut(line, "|")
			demos = append(demos, agentd.Demonstration{Input: in, Output: out})
		}
		var h []agentd.Turn
		for _, line := range lines(historyLines) {
			u, a, _ := strings.Cut(line, "|")
			h = append(h, turn(u, a, count))
		}
		fixed := Compile(instructions, demos, count)
		res, err := Build(Input{Fixed: fixed, History: h, Message: message, MessageTokens: count(message), ContextWindow: window, MaxTokens: maxTokens})

		if window <= 0 || maxTokens < 0 {
			if err == nil || agentd.ErrorCode(err) != agentd.EInternal {
				t.Fatalf("window %d, max %d: err = %v, want an internal error", window, maxTokens, err)
			}
			return
		}
		budget := window - maxTokens
		required := llm.CountMessages(count, append(slices.Clip(fixed.Messages), llm.Message{Content: message}))
		if err != nil {
			var e *agentd.Error
			if !errors.As(err, &e) || e.Code != agentd.EInvalid {
				t.Fatalf("err = %v, want an EInvalid *agentd.Error", err)
			}
			if required <= budget || e.Fields["required_tokens"] != required {
				t.Fatalf("refused a prompt needing %d of %d: %v", required, budget, e.Fields)
			}
			return
		}
		if required > budget {
			t.Fatalf("accepted a prompt needing %d of %d", required, budget)
		}
		if got := llm.CountMessages(count, res.Messages); res.InputTokens != got {
			t.Fatalf("InputTokens = %d, CountMessages = %d", res.InputTokens, got)
		}
		if res.InputTokens > budget {
			t.Fatalf("InputTokens = %d over budget %d", res.InputTokens, budget)
		}
		kept := (len(res.Messages) - len(fixed.Messages) - 1) / 2
		if res.TrimmedTurns+kept != len(h) {
			t.Fatalf("trimmed %d + kept %d != %d turns", res.TrimmedTurns, kept, len(h))
		}
		if !reflect.DeepEqual(res.Messages[:len(fixed.Messages)], fixed.Messages) {
			t.Fatal("fixed messages changed")
		}
		for i, ht := range h[res.TrimmedTurns:] {
			m := res.Messages[len(fixed.Messages)+2*i:]
			if !reflect.DeepEqual(m[:2], []llm.Message{{Role: llm.RoleUser, Content: ht.User}, {Role: llm.RoleAssistant, Content: ht.Assistant}}) {
				t.Fatalf("history turn %d out of place: %+v", res.TrimmedTurns+i, m[:2])
			}
		}
		if last := res.Messages[len(res.Messages)-1]; !reflect.DeepEqual(last, llm.Message{Role: llm.RoleUser, Content: message}) {
			t.Fatalf("last message = %+v", last)
		}
		if res.TrimmedTurns > 0 {
			next := h[res.TrimmedTurns-1]
			if res.InputTokens+2*llm.TokensPerMessage+next.UserTokens+next.AssistantTokens <= budget {
				t.Fatalf("trimmed turn %d would have fit", res.TrimmedTurns-1)
			}
		}
	})
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func BenchmarkBuild(b *testing.B) {
	count := tokens.O200k().Count
	fixed := Compile(agentd.DefaultInstructions, []agentd.Demonstration{
		{Input: "Where is my order?", Output: "Track it under Orders in your account."},
		{Input: "How do I reset my password?", Output: "Open Settings, then Security, then Reset password."},
		{Input: "What are your opening hours?", Output: "We are open 9:00 to 17:00, Monday to Friday."},
	}, count)
	h := make([]agentd.Turn, 50)
	total := 0
	for i := range h {
		h[i] = turn(fmt.Sprintf("Question number %d about my account and the order I placed last week?", i),
			fmt.Sprintf("Answer number %d: your order shipped on Tuesday and should arrive within three working days.", i), count)
		total += 2*llm.TokensPerMessage + h[i].UserTokens + h[i].AssistantTokens
	}
	msg := "Thanks. Can you summarize everything we discussed?"
	cases := []struct {
		name   string
		window int
	}{
		{"all50", 8192 + total},
		{"trims", fixed.Tokens + total/2 + 1000},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			in := Input{Fixed: fixed, History: h, Message: msg, MessageTokens: count(msg), ContextWindow: c.window, MaxTokens: 1000}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestImports enforces the package's dependency rule: the standard library, the
// domain package and internal/llm only.
func TestImports(t *testing.T) {
	allowed := map[string]bool{"github.com/agentd/agentd": true, "github.com/agentd/agentd/internal/llm": true}
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
			if std := !strings.Contains(strings.Split(path, "/")[0], "."); !std && !allowed[path] {
				t.Errorf("%s imports %s; prompt may import only the standard library, agentd and internal/llm", name, path)
			}
		}
	}
}

// TestBuildToolTurns: a turn of tool results is laid out as the results, then
// the user's message if any, then the assistant's text and calls; trimming never
// keeps it without the turn whose calls it answers.
func TestBuildToolTurns(t *testing.T) {
	calls := agentd.Turn{User: "weather?", Assistant: "", UserTokens: 1, AssistantTokens: 10,
		TurnTools: agentd.TurnTools{Calls: []agentd.ToolCall{{ID: "c1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}}}
	results := agentd.Turn{User: "", Assistant: "sunny", UserTokens: 2, AssistantTokens: 1,
		TurnTools: agentd.TurnTools{Results: []agentd.ToolResult{{CallID: "c1", Content: "18C"}}}}
	pic := agentd.Turn{User: "and this?", Assistant: "a cat", UserTokens: 2 + llm.ImageTokens, AssistantTokens: 2,
		TurnTools: agentd.TurnTools{Images: []agentd.Image{{URL: "https://x/cat.png"}}}}
	history := []agentd.Turn{calls, results, pic}
	res, err := Build(Input{History: history, Message: "next", MessageTokens: 1, ContextWindow: 100_000, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := []llm.Message{
		{Role: llm.RoleUser, Content: "weather?"},
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		{Role: llm.RoleTool, ToolCallID: "c1", Content: "18C"},
		{Role: llm.RoleAssistant, Content: "sunny"},
		{Role: llm.RoleUser, Parts: []llm.Part{{Type: llm.PartText, Text: "and this?"}, {Type: llm.PartImage, ImageURL: "https://x/cat.png"}}},
		{Role: llm.RoleAssistant, Content: "a cat"},
		{Role: llm.RoleUser, Content: "next"},
	}
	if !reflect.DeepEqual(res.Messages, want) {
		t.Fatalf("Messages =\n%+v\nwant\n%+v", res.Messages, want)
	}
	sum := llm.TokensPerReply + llm.TokensPerMessage + 1
	for i := range history {
		sum += TurnCost(&history[i])
	}
	if res.InputTokens != sum {
		t.Errorf("InputTokens = %d, want %d", res.InputTokens, sum)
	}

	// A window with room for the last two turns but not the first: the results
	// turn goes with its calls.
	window := sum - TurnCost(&calls) + 10 + 1
	res, err = Build(Input{History: history, Message: "next", MessageTokens: 1, ContextWindow: window, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.TrimmedTurns != 2 || len(res.Messages) != 3 || res.Messages[0].Parts == nil {
		t.Errorf("trimmed %d turns, messages %+v; want the calls and their results both gone", res.TrimmedTurns, res.Messages)
	}

	// Tool results from the caller need the session's last turn, which made the
	// calls; when it does not fit, the prompt does not either.
	tail := []llm.Message{{Role: llm.RoleTool, ToolCallID: "c1", Content: "18C"}}
	_, err = Build(Input{History: []agentd.Turn{calls}, Tail: tail, TailTokens: 5, ContextWindow: 25, MaxTokens: 10})
	if agentd.ErrorCode(err) != agentd.EInvalid || !strings.Contains(err.Error(), "tool results") {
		t.Errorf("err = %v, want the prompt refused for the calls it cannot carry", err)
	}
}
