// Package editscript computes the shortest edit script between two sequences
// (a longest common subsequence), bounded in memory: the version diffs of the
// API and the plans of `agentd apply` both show changes with it.
package editscript

// Op is one step of a script: Kind ' ' keeps a[I] (= b[J]), '-' removes a[I],
// '+' adds b[J].
type Op struct {
	Kind byte
	I, J int
}

// MaxCells bounds the table of one script: the middle that remains after the
// common head and tail is trimmed. A longer middle is given as removed whole,
// then added whole, rather than holding a table of len(a)×len(b) cells.
const MaxCells = 4 << 20

// Script is an edit script from a to b.
func Script[T comparable](a, b []T) []Op {
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	ma, mb := a[head:len(a)-tail], b[head:len(b)-tail]
	ops := make([]Op, 0, len(a)+len(b)-head-tail)
	for i := 0; i < head; i++ {
		ops = append(ops, Op{' ', i, i})
	}
	if (len(ma)+1)*(len(mb)+1) <= MaxCells {
		for _, o := range lcs(ma, mb) {
			ops = append(ops, Op{o.Kind, o.I + head, o.J + head})
		}
	} else {
		for i := range ma {
			ops = append(ops, Op{'-', head + i, head})
		}
		for j := range mb {
			ops = append(ops, Op{'+', head + len(ma), head + j})
		}
	}
	for k := 0; k < tail; k++ {
		ops = append(ops, Op{' ', len(a) - tail + k, len(b) - tail + k})
	}
	return ops
}

// lcs is the script along a longest common subsequence, from its full table.
func lcs[T comparable](a, b []T) []Op {
	n, m := len(a), len(b)
	t := make([][]int, n+1)
	for i := range t {
		t[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				t[i][j] = t[i+1][j+1] + 1
			} else {
				t[i][j] = max(t[i+1][j], t[i][j+1])
			}
		}
	}
	var ops []Op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, Op{' ', i, j})
			i, j = i+1, j+1
		case i < n && (j == m || t[i+1][j] >= t[i][j+1]):
			ops = append(ops, Op{'-', i, j})
			i++
		default:
			ops = append(ops, Op{'+', i, j})
			j++
		}
	}
	return ops
}
