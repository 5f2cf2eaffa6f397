package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in the bucket whose range holds it, and a bucket spans at
	// most 1/64 of its smallest value (exact below 128 ns).
	for v := int64(0); v < 1<<22; v += 1 + v/97 {
		i := bucketOf(v)
		low, width := bucketRange(i)
		if v < low || v >= low+width {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, low, low+width)
		}
		if v >= histSub && float64(width)/float64(low) > 1.0/64 {
			t.Fatalf("bucket %d = [%d, +%d) is wider than 1/64 of its values", i, low, width)
		}
		if v < histSub && width != 1 {
			t.Fatalf("value %d below %d not exact", v, histSub)
		}
	}
	if got := bucketOf(math.MaxInt64); got != histBuckets-1 {
		t.Errorf("huge value in bucket %d, want the top one %d", got, histBuckets-1)
	}
	if got := bucketOf(-5); got != 0 {
		t.Errorf("negative value in bucket %d, want 0", got)
	}
	if low, _ := bucketRange(histBuckets - 1); time.Duration(low) < 60*time.Second {
		t.Errorf("top bucket starts at %v: the histogram must reach 60 s", time.Duration(low))
	}
}

func TestHistogramQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() time.Duration
	}{
		{"uniform 1µs–100ms", func() time.Duration { return time.Microsecond + time.Duration(r.Int64N(int64(100*time.Millisecond))) }},
		{"exponential, mean 2ms", func() time.Duration { return time.Duration(r.ExpFloat64() * float64(2*time.Millisecond)) }},
		{"lognormal around 300µs", func() time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*0.8) * float64(300*time.Microsecond))
		}},
		{"bimodal 80µs / 50ms", func() time.Duration {
			if r.IntN(10) == 0 {
				return 50*time.Millisecond + time.Duration(r.Int64N(int64(time.Millisecond)))
			}
			return 80*time.Microsecond + time.Duration(r.Int64N(int64(10*time.Microsecond)))
		}},
		{"up to 60s", func() time.Duration { return time.Duration(r.Int64N(int64(60 * time.Second))) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 200_000
			vals := make([]time.Duration, n)
			var h Histogram
			var sum float64
			for i := range vals {
				vals[i] = tc.gen()
				h.Record(vals[i])
				sum += float64(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.99, 0.999} {
				exact := vals[int(math.Ceil(q*n))-1]
				got := h.Quantile(q)
				if rel := math.Abs(float64(got-exact)) / float64(exact); rel > 0.01 {
					t.Errorf("q%.3f = %v, exact %v: off by %.2f%% (want ≤ 1%%)", q, got, exact, rel*100)
				}
			}
			if h.Max() != vals[n-1] || h.Min() != vals[0] || h.Count() != n {
				t.Errorf("max %v min %v count %d, want %v %v %d", h.Max(), h.Min(), h.Count(), vals[n-1], vals[0], n)
			}
			if h.Quantile(1) != vals[n-1] {
				t.Errorf("q1 = %v, want the max %v", h.Quantile(1), vals[n-1])
			}
			if mean := time.Duration(sum / n); h.Mean()-mean > 1 || mean-h.Mean() > 1 {
				t.Errorf("mean %v, want %v", h.Mean(), mean)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var all, a, b, empty Histogram
	for i := range 10_000 {
		d := time.Duration(r.Int64N(int64(time.Second)))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var merged Histogram
	merged.Merge(&empty)
	merged.Merge(&a)
	merged.Merge(&b)
	merged.Merge(&empty)
	if merged != all {
		t.Errorf("merging the parts differs from recording everything: count %d vs %d, max %v vs %v, p50 %v vs %v",
			merged.Count(), all.Count(), merged.Max(), all.Max(), merged.Quantile(0.5), all.Quantile(0.5))
	}
}

func TestHistogramEmpty(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Errorf("empty histogram: p50 %v max %v mean %v count %d", h.Quantile(0.5), h.Max(), h.Mean(), h.Count())
	}
	h.Record(42 * time.Microsecond)
	for _, q := range []float64{0, 0.5, 1} {
		if got := h.Quantile(q); got != 42*time.Microsecond {
			t.Errorf("one value: q%v = %v, want 42µs", q, got)
		}
	}
}
