package bench

import (
	"encoding/json"
	"fmt"
	"time"
)

// growth runs GrowthTurns turns of one session, one at a time, and reports the
// latency of turns 1–10, of the ten turns ending halfway and of the last ten.
// The CPU column of each of those rows is agentd's CPU per turn over the tenth of
// the session that holds them (turns 1–100, 401–500 and 901–1000 of 1,000): ten
// turns are too few for /proc's clock ticks.
func (e *env) growth(sc *scenario, row Row, t Target, proc *child) ([]Row, error) {
	n := e.o.GrowthTurns
	groups := [][2]int{{0, 10}, {n/2 - 10, n / 2}, {n - 10, n}}
	tenth := n / 10
	cpuRanges := [][2]int{{0, tenth}, {n/2 - tenth, n / 2}, {n - tenth, n}}
	sid := fmt.Sprintf("growth-%d", time.Now().UnixNano())
	h := t.Header.Clone()
	h.Set("X-Session-ID", sid)
	lat := make([]time.Duration, n)
	history := map[int]string{}      // after the last turn of a group: what its prompt carried
	cpuAt := map[int]time.Duration{} // agentd's CPU before turn i
	readCPU := func(i int) {
		if proc == nil {
			return
		}
		if st, err := ReadProc(proc.Pid()); err == nil {
			cpuAt[i] = st.CPU
		}
	}
	for i := range n {
		for _, g := range cpuRanges {
			if i == g[0] || i == g[1] {
				readCPU(i)
			}
		}
		tt := t
		tt.Body = fmt.Appendf(nil, `{"message":"turn %d: %s"}`, i+1, benchMessage)
		for _, g := range groups {
			tt.KeepBody = tt.KeepBody || i == g[1]-1
		}
		s := Send(e.ctx, e.client, &tt, h, nil)
		if s.Body != nil {
			var reply struct {
				Context struct {
					HistoryTurns int `json:"history_turns"`
					TrimmedTurns int `json:"trimmed_turns"`
				} `json:"context"`
			}
			if json.Unmarshal(s.Body, &reply) == nil {
				history[i] = fmt.Sprintf("turn %d's prompt carried %d earlier turns, %d trimmed", i+1, reply.Context.HistoryTurns, reply.Context.TrimmedTurns)
			}
		}
		if s.Err != "" {
			if e.ctx.Err() != nil {
				return nil, e.ctx.Err()
			}
			row.Errors[s.Err]++
			if row.ErrorSamples == nil {
				row.ErrorSamples = map[string]string{}
			}
			row.ErrorSamples[s.Err] = s.Detail
		}
		lat[i] = s.Latency
	}
	readCPU(n)
	var rows []Row
	for k, g := range groups {
		var hist Histogram
		for _, d := range lat[g[0]:g[1]] {
			hist.Record(d)
		}
		r := row
		r.Turns = fmt.Sprintf("%d–%d", g[0]+1, g[1])
		r.Scenario = fmt.Sprintf("%s: turns %s", sc.title, r.Turns)
		if h, ok := history[g[1]-1]; ok {
			r.Scenario += " (" + h + ")"
		}
		r.Errors = map[string]int64{}
		r.ErrorSamples = nil
		r.fillHist(&hist, hist.Mean()*time.Duration(hist.Count()))
		cr := cpuRanges[k]
		a, okA := cpuAt[cr[0]]
		b, okB := cpuAt[cr[1]]
		if okA && okB {
			cpu := (b - a) / time.Duration(cr[1]-cr[0])
			r.GatewayCPUPerReq = &cpu
			if cr != g {
				r.Scenario += fmt.Sprintf(" (CPU: turns %d–%d)", cr[0]+1, cr[1])
			}
		}
		rows = append(rows, r)
	}
	// Errors and the peak belong to the whole procedure: shown on its last row.
	last := &rows[len(rows)-1]
	last.Errors, last.ErrorSamples = row.Errors, row.ErrorSamples
	if proc != nil {
		if st, err := ReadProc(proc.Pid()); err == nil {
			last.GatewayPeakRSS = st.PeakRSS
		}
	}
	return rows, nil
}
