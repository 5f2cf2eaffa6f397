package editscript

import (
	"strings"
	"testing"
)

// apply replays ops on a and b, checking each step, and returns the result.
func apply[T comparable](t *testing.T, a, b []T, ops []Op) []T {
	t.Helper()
	var out []T
	ni, nj := 0, 0
	for _, o := range ops {
		switch o.Kind {
		case ' ':
			if o.I != ni || o.J != nj || a[o.I] != b[o.J] {
				t.Fatalf("keep %+v out of place (at %d, %d)", o, ni, nj)
			}
			out = append(out, a[o.I])
			ni, nj = ni+1, nj+1
		case '-':
			if o.I != ni {
				t.Fatalf("remove %+v out of place (at %d)", o, ni)
			}
			ni++
		case '+':
			if o.J != nj {
				t.Fatalf("add %+v out of place (at %d)", o, nj)
			}
			out = append(out, b[o.J])
			nj++
		}
	}
	if ni != len(a) || nj != len(b) {
		t.Fatalf("script covers %d of %d and %d of %d", ni, len(a), nj, len(b))
	}
	return out
}

func TestScript(t *testing.T) {
	for _, tc := range []struct {
		a, b  string
		edits int // removes + adds of a shortest script
	}{
		{"", "", 0}, {"abc", "abc", 0}, {"", "abc", 3}, {"abc", "", 3},
		{"abcdef", "abXdef", 2}, {"kitten", "sitting", 5}, {"abc", "cab", 2},
	} {
		a, b := strings.Split(tc.a, ""), strings.Split(tc.b, "")
		if tc.a == "" {
			a = nil
		}
		if tc.b == "" {
			b = nil
		}
		ops := Script(a, b)
		if got := strings.Join(apply(t, a, b, ops), ""); got != tc.b {
			t.Errorf("%q → %q: the script makes %q", tc.a, tc.b, got)
		}
		edits := 0
		for _, o := range ops {
			if o.Kind != ' ' {
				edits++
			}
		}
		if edits != tc.edits {
			t.Errorf("%q → %q: %d edits, want %d", tc.a, tc.b, edits, tc.edits)
		}
	}
}

// TestScriptBounded: a middle past MaxCells is removed and added whole, with the
// common head and tail kept, and no table of its size is made.
func TestScriptBounded(t *testing.T) {
	n := 3000 // 3001² cells > MaxCells
	a, b := make([]int, n+2), make([]int, n+2)
	a[0], b[0], a[n+1], b[n+1] = -1, -1, -2, -2
	for i := 1; i <= n; i++ {
		a[i], b[i] = i, n+i
	}
	ops := Script(a, b)
	got := apply(t, a, b, ops)
	if len(got) != len(b) || ops[0].Kind != ' ' || ops[len(ops)-1].Kind != ' ' || len(ops) != 2*n+2 {
		t.Errorf("%d ops; want the head and tail kept and the middle replaced whole", len(ops))
	}
}
