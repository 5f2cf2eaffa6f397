package agents

import (
	"testing"

	"github.com/agentd/agentd/internal/store"
)

func TestHistPercentile(t *testing.T) {
	hist := func(ms ...int64) store.LatencyHist {
		var h store.LatencyHist
		for _, v := range ms {
			for i, b := range store.LatencyBounds {
				if v <= b {
					h[i]++
					break
				}
				if i == len(store.LatencyBounds)-1 {
					h[i+1]++
				}
			}
		}
		return h
	}
	for _, c := range []struct {
		name string
		h    store.LatencyHist
		want int64
		ok   bool
	}{
		{"none", store.LatencyHist{}, 0, false},
		{"one", hist(7), 50, true},
		{"bound inclusive", hist(100), 100, true},
		{"twenty", hist(10, 20, 30, 40, 60, 70, 80, 90, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 300, 260), 500, true},
		{"hundred", hist(append(make([]int64, 94), 500, 600, 700, 800, 900, 1000)...), 500, true},
		{"ninety-five of a hundred", hist(append(make([]int64, 95), 600, 600, 600, 600, 600)...), 50, true},
		{"two", hist(1, 100), 100, true},
		{"open bucket", hist(40000, 50000), 30000, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, ok := histPercentile(c.h, 95); got != c.want || ok != c.ok {
				t.Fatalf("histPercentile(%v) = %d, %v; want %d, %v", c.h, got, ok, c.want, c.ok)
			}
		})
	}
}
