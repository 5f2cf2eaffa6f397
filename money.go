package agentd

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
)

// Micros is an amount of credits in micro-credits (1 credit = 1,000,000). All money is
// integer so that sums are exact.
type Micros int64

// MicrosPerCredit is the number of micro-credits in one credit.
const MicrosPerCredit = 1_000_000

// MaxMicros is the largest amount agentd holds anywhere: a balance, a budget, a
// grant, a charge (10^12 credits). Keeping every amount at or below it leaves sums
// of two amounts far inside int64, and an operation that would pass it is refused.
const MaxMicros Micros = 1_000_000_000_000 * MicrosPerCredit

// CreditsToMicros converts a credit amount to micro-credits, rounding to the nearest
// micro-credit. It fails on NaN, infinities and amounts beyond ±MaxMicros.
func CreditsToMicros(c float64) (Micros, error) {
	if math.IsNaN(c) || math.IsInf(c, 0) || math.Abs(c) > float64(MaxMicros/MicrosPerCredit) {
		return 0, fmt.Errorf("amount %v out of range (at most %d credits)", c, MaxMicros/MicrosPerCredit)
	}
	return Micros(math.Round(c * MicrosPerCredit)), nil
}

// AddMicros returns a + b, or false when either is outside ±MaxMicros or the sum
// would be.
func AddMicros(a, b Micros) (Micros, bool) {
	if a > MaxMicros || a < -MaxMicros || b > MaxMicros || b < -MaxMicros {
		return 0, false
	}
	s := a + b // cannot overflow: |a|, |b| ≤ MaxMicros ≪ MaxInt64/2
	return s, s <= MaxMicros && s >= -MaxMicros
}

// Credits returns m in credits, for display.
func (m Micros) Credits() float64 { return float64(m) / MicrosPerCredit }

// MarshalJSON writes m as a decimal number of credits with no float rounding noise.
func (m Micros) MarshalJSON() ([]byte, error) {
	return []byte(m.String()), nil
}

// String formats m as credits, e.g. "12.5" or "-0.000001".
func (m Micros) String() string {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = uint64(-m)
	}
	s := strconv.FormatUint(u/MicrosPerCredit, 10)
	if frac := u % MicrosPerCredit; frac != 0 {
		f := strconv.FormatUint(frac+MicrosPerCredit, 10)[1:] // zero-padded to 6
		for f[len(f)-1] == '0' {
			f = f[:len(f)-1]
		}
		s += "." + f
	}
	if neg {
		s = "-" + s
	}
	return s
}

// Price is a model's price. The catalog states credits per million tokens; stored as
// micro-credits per million tokens so that prices and costs stay exact integers.
// Input tokens read from a provider's prompt cache and input tokens written to it
// have prices of their own (OpenAI discounts cached input; Anthropic bills cache
// reads at a tenth of the input price and cache writes at 1.25×).
type Price struct {
	InputPerM       Micros // micro-credits per million input tokens
	OutputPerM      Micros
	CachedInputPerM Micros // per million input tokens read from the cache
	CacheWritePerM  Micros // per million input tokens written to the cache
}

// Tokens are the counts a charge is made of. CachedInput and CacheWrite are
// parts of Input, counted at their own prices.
type Tokens struct {
	Input, Output, CachedInput, CacheWrite int
}

// Cost returns the cost of inputTokens and outputTokens at the input and output
// prices (Charge of no cached tokens).
func (p Price) Cost(inputTokens, outputTokens int) Micros {
	return p.Charge(Tokens{Input: inputTokens, Output: outputTokens})
}

// Charge returns the cost of t at price p, rounded up to the next micro-credit so
// that the sum of charges never undercounts: the input tokens that were neither
// read from nor written to the cache at the input price, the others at theirs.
// Negative counts and prices count as zero, cached parts beyond the input as
// none of it; a cost beyond MaxMicros is MaxMicros, which no balance covers.
func (p Price) Charge(t Tokens) Micros {
	in := max(t.Input, 0)
	cached := min(max(t.CachedInput, 0), in)
	written := min(max(t.CacheWrite, 0), in-cached)
	return perMillion(
		[2]uint64{uint64(in - cached - written), uint64(max(p.InputPerM, 0))},
		[2]uint64{uint64(cached), uint64(max(p.CachedInputPerM, 0))},
		[2]uint64{uint64(written), uint64(max(p.CacheWritePerM, 0))},
		[2]uint64{uint64(max(t.Output, 0)), uint64(max(p.OutputPerM, 0))},
	)
}

// MaxCost is the most inputTokens and outputTokens can cost at p, however the
// provider splits the input between plain, cached and cache-written tokens: a
// hold's amount.
func (p Price) MaxCost(inputTokens, outputTokens int) Micros {
	q := p
	q.InputPerM = max(p.InputPerM, p.CachedInputPerM, p.CacheWritePerM)
	return q.Cost(inputTokens, outputTokens)
}

// perMillion is the sum of count × price-per-million over terms, in micro-credits
// rounded up, summed in 128 bits; MaxMicros when it would pass it.
func perMillion(terms ...[2]uint64) Micros {
	var hi, lo uint64
	for _, t := range terms {
		h, l := bits.Mul64(t[0], t[1])
		var carry, over uint64
		lo, carry = bits.Add64(lo, l, 0)
		hi, over = bits.Add64(hi, h, carry)
		if over != 0 {
			return MaxMicros
		}
	}
	lo, carry := bits.Add64(lo, 999_999, 0) // round up
	hi, over := bits.Add64(hi, 0, carry)
	if over != 0 || hi >= 1_000_000 { // the quotient would not fit 64 bits
		return MaxMicros
	}
	q, _ := bits.Div64(hi, lo, 1_000_000)
	return Micros(min(q, uint64(MaxMicros)))
}

// Usage is the token usage of one run.
type Usage struct {
	InputTokens  int
	OutputTokens int
	// CachedInputTokens and CacheWriteTokens are parts of InputTokens read from
	// and written to the provider's prompt cache; ReasoningTokens is the part of
	// OutputTokens the model spent reasoning. Zero when the provider said none.
	CachedInputTokens int `json:",omitempty"`
	CacheWriteTokens  int `json:",omitempty"`
	ReasoningTokens   int `json:",omitempty"`
	// Source is "provider" when the counts came from the model's provider and
	// "estimated" when agentd counted them itself.
	Source string
}

// Usage sources.
const (
	UsageProvider  = "provider"
	UsageEstimated = "estimated"
)
