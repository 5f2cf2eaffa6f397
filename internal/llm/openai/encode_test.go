package openai

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/llm"
)

// reference encodes req the way the hand-written encoder must: encoding/json over
// chatRequest, without HTML escaping.
func reference(t testing.TB, req *llm.Request, stream, completion bool) []byte {
	msgs := make([]message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = message{Role: m.Role, Content: m.Content}
	}
	cr := chatRequest{Model: req.Model, Messages: msgs, Temperature: req.Temperature}
	if completion {
		cr.MaxCompletionTokens = req.MaxTokens
	} else {
		cr.MaxTokens = req.MaxTokens
	}
	if stream {
		cr.Stream, cr.StreamOptions = true, askUsage
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&cr); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func checkEncode(t testing.TB, req *llm.Request, stream, completion bool) {
	buf, err := encode(req, stream, completion)
	if err != nil {
		t.Fatal(err)
	}
	defer putBuf(buf)
	got, want := buf.Bytes(), reference(t, req, stream, completion)
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("encode wrote invalid JSON %q: %v", got, err)
	}
	json.Unmarshal(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("encode wrote\n%s\nencoding/json writes\n%s", got, want)
	}
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	texts := []string{"", "plain", `quote " and \ backslash`, "line\nbreak\r\ttab", "\x00\x01\x1f\x7f",
		"<html> & </html>", "ünïcödé ✓ 日本語 🦩", "bad utf-8 \xff\xfe here", "\u2028\u2029", strings.Repeat("long ", 10000)}
	for _, temp := range []float64{0, 0.25, 1, 2, 1e-7, 0.1 + 0.2} {
		for _, mt := range []int{0, 77} {
			for _, s := range texts {
				req := &llm.Request{Model: s, Temperature: temp, MaxTokens: mt, Messages: []llm.Message{
					{Role: "system", Content: s}, {Role: "user", Content: "hi"}, {Role: "assistant", Content: s}}}
				for _, stream := range []bool{false, true} {
					checkEncode(t, req, stream, mt%2 == 1)
				}
			}
		}
	}
	if _, err := encode(&llm.Request{Temperature: math.NaN()}, false, false); err == nil {
		t.Error("a NaN temperature was encoded")
	}
}

func FuzzEncode(f *testing.F) {
	f.Add("gpt-4o", "hello", 0.7, 100)
	f.Add("m\"\\", "a\x00b\xffc\u2028", 1e-9, 0)
	f.Fuzz(func(t *testing.T, model, content string, temp float64, maxTokens int) {
		if math.IsNaN(temp) || math.IsInf(temp, 0) {
			return
		}
		req := &llm.Request{Model: model, Temperature: temp, MaxTokens: maxTokens,
			Messages: []llm.Message{{Role: "user", Content: content}, {Role: content, Content: model}}}
		checkEncode(t, req, maxTokens%2 == 0, maxTokens%3 == 0)
	})
}

func BenchmarkEncodeLongPrompt(b *testing.B) {
	msgs := make([]llm.Message, 450)
	for i := range msgs {
		msgs[i] = llm.Message{Role: "user", Content: "message number 123 about the weather, with some words"}
	}
	req := &llm.Request{Model: "gpt-4o-mini", Messages: msgs, Temperature: 0.7, MaxTokens: 64}
	b.ReportAllocs()
	for b.Loop() {
		buf, _ := encode(req, false, false)
		putBuf(buf)
	}
}

func BenchmarkEncodeLongPromptReflection(b *testing.B) {
	msgs := make([]llm.Message, 450)
	for i := range msgs {
		msgs[i] = llm.Message{Role: "user", Content: "message number 123 about the weather, with some words"}
	}
	req := &llm.Request{Model: "gpt-4o-mini", Messages: msgs, Temperature: 0.7, MaxTokens: 64}
	b.ReportAllocs()
	for b.Loop() {
		reference(b, req, false, false)
	}
}
