package tokens

import (
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer/codec"
)

// Counter counts and truncates text with one BPE tokenizer. It is safe for concurrent
// use. The zero value is not usable; get one from O200k.
type Counter struct {
	codec *codec.Codec

	// cache remembers counts of recent texts. A session's history, instructions and
	// demonstrations are counted again on every turn (by the offline model's usage,
	// for one), and BPE costs ~200 µs per KB; a map lookup costs a hash of the text.
	mu    sync.RWMutex
	cache map[string]int
}

// Cache bounds: texts outside them are counted every time; a full cache is emptied.
const (
	cacheMinLen  = 16
	cacheMaxLen  = 64 << 10
	cacheEntries = 16384
)

// o200k is built on first use: loading the vocabulary and compiling the split
// expression take tens of milliseconds, which a process that never counts (or a test
// that never counts) should not pay.
var o200k = sync.OnceValue(func() *Counter {
	return &Counter{codec: codec.NewO200kBase(), cache: make(map[string]int)}
})

var cl100k = sync.OnceValue(func() *Counter {
	return &Counter{codec: codec.NewCl100kBase(), cache: make(map[string]int)}
})

// O200k returns the process-wide counter for OpenAI's o200k_base encoding (GPT-4o,
// GPT-4.1, GPT-5, o-series). It is built once, on the first call.
func O200k() *Counter { return o200k() }

// Cl100k returns the process-wide counter for OpenAI's cl100k_base encoding (GPT-4,
// GPT-3.5 Turbo). It is built once, on the first call.
func Cl100k() *Counter { return cl100k() }

// Count returns the number of tokens in s. It never fails: if the tokenizer reports
// an error, Count falls back to a byte-based estimate so that a caller sizing a hold
// or a prompt still gets a usable, non-zero number.
func (c *Counter) Count(s string) int {
	if s == "" {
		return 0
	}
	cacheable := len(s) >= cacheMinLen && len(s) <= cacheMaxLen && c.cache != nil
	if cacheable {
		c.mu.RLock()
		n, ok := c.cache[s]
		c.mu.RUnlock()
		if ok {
			return n
		}
	}
	n, err := c.codec.Count(s)
	if err != nil {
		return len(s)/4 + 1
	}
	if cacheable {
		c.mu.Lock()
		if len(c.cache) >= cacheEntries {
			clear(c.cache)
		}
		c.cache[strings.Clone(s)] = n // never pin a caller's larger buffer
		c.mu.Unlock()
	}
	return n
}

// Truncate returns the longest prefix of s, cut on a rune boundary, that counts at
// most n tokens. It returns s when s already fits and "" when n ≤ 0.
func (c *Counter) Truncate(s string, n int) string {
	if n <= 0 || s == "" {
		return ""
	}
	_, toks, err := c.codec.Encode(s)
	if err != nil || !utf8.ValidString(s) {
		// Invalid UTF-8 is tokenized after replacement, so the token texts are not
		// pieces of s and cannot locate a cut; search the prefixes instead.
		return c.search(s, len(s), n)
	}
	if len(toks) <= n {
		return s
	}
	// The first n tokens' texts concatenate to a prefix of s. A token may end inside
	// a multi-byte character, so back off to the character's start.
	end := 0
	for _, t := range toks[:n] {
		if !strings.HasPrefix(s[end:], t) {
			return c.search(s, len(s), n)
		}
		end += len(t)
	}
	next := end + len(toks[n])
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	// BPE merges depend on what follows, so a prefix can tokenize differently on its
	// own: check the cut, and grow it while the next character still fits. Growth
	// stops at the end of the next token, so a cut costs a few counts, not one per
	// character of s.
	if c.Count(s[:end]) > n {
		return c.search(s, end, n)
	}
	for end < next {
		_, size := utf8.DecodeRuneInString(s[end:])
		if c.Count(s[:end+size]) > n {
			break
		}
		end += size
	}
	return s[:end]
}

// search returns the longest rune-boundary prefix of s[:limit] counting at most n
// tokens, by binary search over rune boundaries. Token counts of prefixes grow with
// length in practice, which is what the search relies on.
func (c *Counter) search(s string, limit, n int) string {
	bounds := make([]int, 0, limit+1)
	for i := range s[:limit] {
		bounds = append(bounds, i)
	}
	bounds = append(bounds, limit)
	// Find the first boundary whose prefix is too long; the one before it is the answer.
	lo, hi := 0, len(bounds) // bounds[lo] fits (the empty prefix always does)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if c.Count(s[:bounds[mid]]) <= n {
			lo = mid
		} else {
			hi = mid
		}
	}
	return s[:bounds[lo]]
}

// Estimate returns a cheap token count for text whose model family has no known
// tokenizer: one token per three bytes, rounded up, and at least one. BPE tokenizers
// average about four bytes per token on English, so Estimate over-counts English by
// roughly a third; it is meant for sizing holds and trimming prompts, where counting
// high is safe, never for billing.
func Estimate(s string) int {
	return max(1, (len(s)+2)/3)
}
