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
type Price struct {
	InputPerM  Micros // micro-credits per million input tokens
	OutputPerM Micros
}

// Cost returns the cost of a usage at price p, rounded up to the next micro-credit so
// that the sum of charges never undercounts. Negative counts and prices count as
// zero; a cost beyond MaxMicros is MaxMicros, which no balance covers.
func (p Price) Cost(inputTokens, outputTokens int) Micros {
	// tokens × micro-credits per million tokens, summed in 128 bits.
	ih, il := bits.Mul64(uint64(max(inputTokens, 0)), uint64(max(p.InputPerM, 0)))
	oh, ol := bits.Mul64(uint64(max(outputTokens, 0)), uint64(max(p.OutputPerM, 0)))
	lo, carry := bits.Add64(il, ol, 0)
	hi, over := bits.Add64(ih, oh, carry)
	lo, carry = bits.Add64(lo, 999_999, 0) // round up
	hi, over2 := bits.Add64(hi, 0, carry)
	if over != 0 || over2 != 0 || hi >= 1_000_000 { // the quotient would not fit 64 bits
		return MaxMicros
	}
	q, _ := bits.Div64(hi, lo, 1_000_000)
	return Micros(min(q, uint64(MaxMicros)))
}

// Usage is the token usage of one run.
type Usage struct {
	InputTokens  int
	OutputTokens int
	// Source is "provider" when the counts came from the model's provider and
	// "estimated" when agentd counted them itself.
	Source string
}

// Usage sources.
const (
	UsageProvider  = "provider"
	UsageEstimated = "estimated"
)
