package agentd

import (
	"fmt"
	"math"
	"strconv"
)

// Micros is an amount of credits in micro-credits (1 credit = 1,000,000). All money is
// integer so that sums are exact.
type Micros int64

// MicrosPerCredit is the number of micro-credits in one credit.
const MicrosPerCredit = 1_000_000

// CreditsToMicros converts a credit amount to micro-credits, rounding to the nearest
// micro-credit. It fails on NaN, infinities and amounts too large to represent.
func CreditsToMicros(c float64) (Micros, error) {
	if math.IsNaN(c) || math.IsInf(c, 0) || math.Abs(c) > 9e12 {
		return 0, fmt.Errorf("amount %v out of range", c)
	}
	return Micros(math.Round(c * MicrosPerCredit)), nil
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
// that the sum of charges never undercounts.
func (p Price) Cost(inputTokens, outputTokens int) Micros {
	num := int64(inputTokens)*int64(p.InputPerM) + int64(outputTokens)*int64(p.OutputPerM)
	return Micros((num + 999_999) / 1_000_000)
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
