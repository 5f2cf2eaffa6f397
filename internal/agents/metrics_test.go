package agents

import "testing"

func TestPercentile(t *testing.T) {
	for _, c := range []struct {
		name string
		v    []int64
		want int64
	}{
		{"one", []int64{7}, 7},
		{"twenty", []int64{20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 19},
		{"hundred", append(make([]int64, 94), 500, 600, 700, 800, 900, 1000), 500},
		{"two", []int64{1, 100}, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := percentile(c.v, 0.95); got != c.want {
				t.Fatalf("percentile = %d, want %d", got, c.want)
			}
		})
	}
}
