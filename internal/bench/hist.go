package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations in log-linear buckets, HDR style: exact below 128 ns,
// then 64 buckets per power of two, so a bucket spans at most 1/64 of its values
// (a quantile is off by at most ±0.8 % once reported at its bucket's midpoint).
// It covers 1 ns to ~68.7 s in constant memory (16 KiB); longer values count in
// the top bucket, and Max stays exact. The zero value is ready to use. A
// Histogram is not safe for concurrent use: give each worker its own and Merge.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      float64 // nanoseconds
	min, max int64
}

const (
	histSubBits  = 7                // 128 linear buckets below 128 ns
	histSub      = 1 << histSubBits // values per linear range
	histHalf     = histSub / 2      // buckets per power of two above it
	histTopBits  = 36               // 2^36 ns ≈ 68.7 s
	histBuckets  = histSub + (histTopBits-histSubBits)*histHalf
	histMaxValue = 1<<histTopBits - 1 // largest value with its own bucket
)

// bucketOf returns the bucket index of a value in nanoseconds.
func bucketOf(v int64) int {
	if v < histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	if v > histMaxValue {
		v = histMaxValue
	}
	e := bits.Len64(uint64(v)) - histSubBits // ≥ 1: the bucket width is 2^e
	m := int(v >> e)                         // in [histHalf, histSub)
	return histSub + (e-1)*histHalf + m - histHalf
}

// bucketRange returns the smallest value of bucket i and its width.
func bucketRange(i int) (low, width int64) {
	if i < histSub {
		return int64(i), 1
	}
	e := (i-histSub)/histHalf + 1
	m := int64((i-histSub)%histHalf + histHalf)
	return m << e, 1 << e
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return int64(h.n) }

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min is the smallest recorded value, exactly.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Mean is the average of the recorded values, exactly.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.n)))
}

// Quantile returns the value below or at which a fraction q (0–1) of the recorded
// values lie: the midpoint of the bucket holding the value of rank ⌈q·n⌉, kept
// within [Min, Max]. It is 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank >= h.n {
		return time.Duration(h.max)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			v := low + (width-1)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
