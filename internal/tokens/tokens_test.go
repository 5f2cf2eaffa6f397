package tokens

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCount(t *testing.T) {
	c := O200k()
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"empty", "", 0},
		{"hello world", "hello world", 2},
		{"punctuation", "Hello, world!", 4},
		{"pangram", "The quick brown fox jumps over the lazy dog.", 10},
		{"japanese", "日本語のテキスト", 6},
		{"emoji split into bytes", "🦩🦩", 6},
		{"invalid utf-8 is replaced", "a\xffb", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Count(tt.in); got != tt.want {
				t.Errorf("Count(%q) = %d, want %d", tt.in, got, tt.want)
			}
			// Count must agree with the codec's own encoding.
			if ids, _, err := c.codec.Encode(tt.in); err != nil || len(ids) != tt.want {
				t.Errorf("Encode(%q) = %d tokens, %v; want %d", tt.in, len(ids), err, tt.want)
			}
		})
	}
}

func TestO200kIsShared(t *testing.T) {
	if O200k() != O200k() {
		t.Fatal("O200k returned two counters; the codec must be built once")
	}
}

func TestTruncate(t *testing.T) {
	c := O200k()
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"zero budget", "hello world", 0, ""},
		{"negative budget", "hello world", -3, ""},
		{"empty input", "", 5, ""},
		{"fits exactly", "hello world", 2, "hello world"},
		{"fits with room", "hello world", 10, "hello world"},
		{"first word", "hello world", 1, "hello"},
		{"sentence", "The quick brown fox jumps over the lazy dog.", 3, "The quick brown"},
		{"token ends inside a rune", "🦩🦩", 4, "🦩"},
		{"rune needs more tokens than budget", "🦩🦩", 2, ""},
		{"japanese", "日本語のテキスト", 2, "日本語"},
		{"invalid utf-8", "a\xffb c", 2, "a\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Truncate(tt.in, tt.n); got != tt.want {
				t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

// TestTruncateProperties checks, for every budget, that the result is a prefix cut on
// a rune boundary, fits the budget, and cannot grow by one more rune.
func TestTruncateProperties(t *testing.T) {
	c := O200k()
	inputs := map[string]string{
		"english": "Agents answer from their demonstrations; the offline model never guesses.",
		"mixed":   "Prix: 12,50 € — 日本語のテキスト 🦩 naïve café ꙮ",
		"spaces":  "a  b   c\n\n\td    e",
		"numbers": "1234567890 3.14159 2025-01-01T00:00:00Z",
		"invalid": "ok \xff\xfe then \xc3 fine",
		"runes":   "ᚠᛇᚻ᛫ᛒᛦᚦ",
		"oneword": "supercalifragilisticexpialidocious",
		"code":    "func main() { fmt.Println(\"hi\") }",
	}
	for name, s := range inputs {
		t.Run(name, func(t *testing.T) {
			total := c.Count(s)
			for n := 0; n <= total+1; n++ {
				got := c.Truncate(s, n)
				if !strings.HasPrefix(s, got) {
					t.Fatalf("n=%d: %q is not a prefix of %q", n, got, s)
				}
				if k := c.Count(got); k > n {
					t.Fatalf("n=%d: %q counts %d tokens", n, got, k)
				}
				if rest := s[len(got):]; rest != "" {
					if utf8.ValidString(s) && !utf8.RuneStart(rest[0]) {
						t.Fatalf("n=%d: cut inside a rune: %q", n, got)
					}
					_, size := utf8.DecodeRuneInString(rest)
					if k := c.Count(s[:len(got)+size]); k <= n {
						t.Fatalf("n=%d: %q could grow by one rune (%d tokens)", n, got, k)
					}
				}
				if n >= total && got != s {
					t.Fatalf("n=%d ≥ %d tokens: got %q, want the whole input", n, total, got)
				}
			}
		})
	}
}

func TestSearchMatchesTruncate(t *testing.T) {
	c := O200k()
	s := "Prix: 12,50 € — 日本語のテキスト 🦩 naïve café"
	for n := 1; n <= c.Count(s); n++ {
		if got, want := c.search(s, len(s), n), c.Truncate(s, n); got != want {
			t.Errorf("n=%d: search = %q, Truncate = %q", n, got, want)
		}
	}
}

func TestEstimate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"empty is one", "", 1},
		{"one byte", "a", 1},
		{"three bytes", "abc", 1},
		{"four bytes", "abcd", 2},
		{"hello world", "hello world", 4},
		{"multi-byte counts bytes", "日本", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Estimate(tt.in); got != tt.want {
				t.Errorf("Estimate(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestEstimateOverCountsEnglish(t *testing.T) {
	if e, n := Estimate(paragraph), O200k().Count(paragraph); e < n {
		t.Errorf("Estimate = %d < exact %d on English; holds sized with it would be short", e, n)
	}
}

func TestConcurrentCount(t *testing.T) {
	c := O200k()
	want := c.Count(paragraph)
	done := make(chan int)
	for range 8 {
		go func() { done <- c.Count(paragraph) }()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Errorf("concurrent Count = %d, want %d", got, want)
		}
	}
}

func FuzzTruncate(f *testing.F) {
	for _, s := range []string{"hello world", "🦩🦩", "a\xffb", "日本語のテキスト", ""} {
		f.Add(s, 2)
	}
	c := O200k()
	f.Fuzz(func(t *testing.T, s string, n int) {
		n %= 64
		got := c.Truncate(s, n)
		if !strings.HasPrefix(s, got) {
			t.Fatalf("%q is not a prefix of %q", got, s)
		}
		if n > 0 {
			if k := c.Count(got); k > n {
				t.Fatalf("Truncate(%q, %d) = %q with %d tokens", s, n, got, k)
			}
		} else if got != "" {
			t.Fatalf("Truncate(%q, %d) = %q, want empty", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q cuts a rune", s, n, got)
		}
	})
}

// paragraph is about 1 KB of English prose.
const paragraph = `An agent in agentd is a stored configuration: instructions, a handful of ` +
	`demonstrations, a model and its settings. Running an agent by name assembles a prompt ` +
	`from that configuration and the session's history, takes a hold on the organization's ` +
	`balance sized from an estimate, calls the provider, and then settles the exact cost in ` +
	`one transaction that also writes the ledger row and the session turn. Because the ` +
	`estimate only has to be an upper bound, it can be cheap; the exact count is taken once, ` +
	`at settle time, from the provider's report or from the tokenizer. Token counting must ` +
	`therefore be fast and must never reach the network: the machines that run agentd often ` +
	`have no internet access at all, so tokenizer tables are compiled into the binary. The ` +
	`offline model, which answers from an agent's own demonstrations, uses the same counter ` +
	`so that its usage numbers agree with the ones the prompt builder computed when it ` +
	`decided which history turns to keep and which to leave out of the prompt this time.`

// BenchmarkCountO200k measures tokenizing (a fresh text each time, so the count
// cache misses) and a cache hit.
func BenchmarkCountO200k(b *testing.B) {
	c := O200k()
	c.Count(paragraph) // build the codec outside the timing
	b.Run("uncached", func(b *testing.B) {
		b.SetBytes(int64(len(paragraph)))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			c.Count(paragraph[i%7:]) // seven distinct texts, and the cache cleared before any repeats
			if i%7 == 0 {
				c.mu.Lock()
				clear(c.cache)
				c.mu.Unlock()
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.SetBytes(int64(len(paragraph)))
		b.ReportAllocs()
		for b.Loop() {
			c.Count(paragraph)
		}
	})
}

// TestCl100k checks the GPT-4 encoding against OpenAI's cookbook example
// ("tiktoken is great!" is [83, 1609, 5963, 374, 2294, 0] in cl100k_base).
func TestCl100k(t *testing.T) {
	c := Cl100k()
	if c != Cl100k() || c == O200k() {
		t.Fatal("Cl100k must be one shared counter, distinct from O200k")
	}
	ids, _, err := c.codec.Encode("tiktoken is great!")
	if err != nil {
		t.Fatal(err)
	}
	want := []uint{83, 1609, 5963, 374, 2294, 0}
	if len(ids) != len(want) {
		t.Fatalf("ids = %v, want %v", ids, want)
	}
	for i := range ids {
		if ids[i] != want[i] {
			t.Fatalf("ids = %v, want %v", ids, want)
		}
	}
	if n := c.Count("tiktoken is great!"); n != 6 {
		t.Errorf("Count = %d, want 6", n)
	}
	if got := c.Truncate("tiktoken is great!", 4); got != "tiktoken is" { // t·ik·token· is
		t.Errorf("Truncate(4) = %q", got)
	}
}
