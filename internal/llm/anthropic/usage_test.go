package anthropic

import (
	"math"
	"testing"
)

// TestUsageParts: cache writes and reads count as input; a negative part or a sum
// that would overflow is reported as an impossible count (-1), never wrapped or
// cancelled out into a plausible one.
func TestUsageParts(t *testing.T) {
	tests := []struct {
		name string
		u    usage
		want int
	}{
		{"plain", usage{InputTokens: 10}, 10},
		{"cache parts add up", usage{InputTokens: 10, CacheCreationInputTokens: 5, CacheReadInputTokens: 100}, 115},
		{"a negative part hidden in a positive total", usage{InputTokens: -1000, CacheReadInputTokens: 1100}, -1},
		{"a negative cache part", usage{InputTokens: 10, CacheCreationInputTokens: -3}, -1},
		{"an overflowing sum", usage{InputTokens: math.MaxInt, CacheReadInputTokens: math.MaxInt, CacheCreationInputTokens: 2}, -1},
		{"the largest sum", usage{InputTokens: math.MaxInt - 1, CacheReadInputTokens: 1}, math.MaxInt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.u.llmUsage(); got.InputTokens != tt.want {
				t.Errorf("input tokens %d, want %d", got.InputTokens, tt.want)
			}
		})
	}
}
