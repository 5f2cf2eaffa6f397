package bench

import (
	"fmt"
	"strings"
	"time"
)

const mib = 1 << 20

func (rep *Report) checks() []Check {
	var out []Check
	add := func(target string, measured string, pass bool, ok bool) {
		c := Check{Target: target, Measured: measured, Verdict: "not measured"}
		if ok {
			c.Verdict = "FAIL"
			if pass {
				c.Verdict = "PASS"
			}
		}
		out = append(out, c)
	}
	measured := func(r *Row) bool { return r != nil && r.Requests > 0 }

	chat64, proxy64 := rep.row("chat", 64), rep.row("proxy", 64)
	if measured(chat64) && measured(proxy64) {
		ratio := chat64.Throughput / proxy64.Throughput
		add("/v1/chat/completions c=64 ≥ 0.85× the bare JSON proxy (same run; ≈ 7,000 req/s)",
			fmt.Sprintf("%.2f× (%s vs %s req/s)", ratio, num(chat64.Throughput), num(proxy64.Throughput)), ratio >= 0.85, true)
	} else {
		add("/v1/chat/completions c=64 ≥ 0.85× the bare JSON proxy (same run; ≈ 7,000 req/s)", "—", false, false)
	}
	if measured(chat64) && chat64.GatewayCPUPerReq != nil {
		m := micros(*chat64.GatewayCPUPerReq)
		if measured(proxy64) && proxy64.GatewayCPUPerReq != nil {
			m += fmt.Sprintf(" (the bare proxy: %s)", micros(*proxy64.GatewayCPUPerReq))
		}
		add("agentd CPU ≤ 160 µs per request (/v1/chat/completions c=64)", m, *chat64.GatewayCPUPerReq <= 160*time.Microsecond, true)
	} else {
		add("agentd CPU ≤ 160 µs per request (/v1/chat/completions c=64)", "—", false, false)
	}
	if r := rep.row("chat", 1); measured(r) && r.AddedP50 != nil {
		m := signed(*r.AddedP50)
		if p := rep.row("proxy", 1); measured(p) && p.AddedP50 != nil {
			m += fmt.Sprintf(" (the bare proxy: %s)", signed(*p.AddedP50))
		}
		add("added p50 ≤ +0.30 ms at c=1 (/v1/chat/completions vs upstream direct)", m, *r.AddedP50 <= 300*time.Microsecond, true)
	} else {
		add("added p50 ≤ +0.30 ms at c=1 (/v1/chat/completions vs upstream direct)", "—", false, false)
	}
	if r := rep.row("chat", 256); measured(r) {
		add("p99 ≤ 90 ms at c=256 (/v1/chat/completions)", dur(r.P99), r.P99 <= 90*time.Millisecond, true)
	} else {
		add("p99 ≤ 90 ms at c=256 (/v1/chat/completions)", "—", false, false)
	}
	var peak int64
	var peakRow string
	for _, r := range rep.Rows {
		if r.Gateway == "agentd" && r.GatewayPeakRSS > peak {
			peak, peakRow = r.GatewayPeakRSS, fmt.Sprintf("%s c=%d", r.ID, r.Concurrency)
		}
	}
	add("agentd peak RSS ≤ 64 MiB under load", fmt.Sprintf("%.1f MiB (%s)", float64(peak)/mib, peakRow), peak <= 64*mib, peak > 0)

	slow, direct := rep.row("chat-slow", 256), rep.row("direct-slow", 256)
	if measured(slow) && measured(direct) {
		ratio := slow.Throughput / direct.Throughput
		m, m2 := fmt.Sprintf("%.2f× (%s vs %s req/s)", ratio, num(slow.Throughput), num(direct.Throughput)), signed(*slow.AddedP50)
		if p := rep.row("proxy-slow", 256); measured(p) && p.AddedP50 != nil {
			m += fmt.Sprintf(" (the bare proxy: %.2f×)", p.Throughput/direct.Throughput)
			m2 += fmt.Sprintf(" (the bare proxy: %s)", signed(*p.AddedP50))
		}
		add(fmt.Sprintf("%s upstream, c=256: ≥ 0.93× the upstream's own throughput", dur(time.Duration(rep.SlowNS))), m, ratio >= 0.93, true)
		add(fmt.Sprintf("%s upstream, c=256: added p50 ≤ +5 ms", dur(time.Duration(rep.SlowNS))), m2, *slow.AddedP50 <= 5*time.Millisecond, true)
	} else {
		add("slow upstream, c=256: ≥ 0.93× the upstream's own throughput", "—", false, false)
		add("slow upstream, c=256: added p50 ≤ +5 ms", "—", false, false)
	}
	if r := rep.row("run-session", 64); measured(r) {
		add("run endpoint with a session ≥ 5,000 runs/s at c=64", num(r.Throughput)+" runs/s", r.Throughput >= 5000, true)
	} else {
		add("run endpoint with a session ≥ 5,000 runs/s at c=64", "—", false, false)
	}
	var growth []Row
	for _, r := range rep.Rows {
		if r.ID == "session-growth" {
			growth = append(growth, r)
		}
	}
	if len(growth) == 3 && growth[0].P50 > 0 {
		ratio := float64(growth[2].P50) / float64(growth[0].P50)
		add(fmt.Sprintf("turn %d of a session within 1.2× of turn 1 (p50 of the last ten turns / the first ten)", rep.GrowthMax),
			fmt.Sprintf("%.2f× (%s vs %s; turns %s: %s)", ratio, dur(growth[2].P50), dur(growth[0].P50), growth[1].Turns, dur(growth[1].P50)),
			ratio <= 1.2, true)
	} else {
		add("turn 1,000 of a session within 1.2× of turn 1", "—", false, false)
	}
	var bad []string
	cells := 0
	for _, r := range rep.Rows {
		if r.NA != "" {
			continue
		}
		cells++
		if n := r.errorCount(); n > 0 {
			bad = append(bad, fmt.Sprintf("%s c=%d: %d", r.ID, r.Concurrency, n))
		}
	}
	if len(bad) == 0 {
		add("zero errors in every cell", fmt.Sprintf("0 errors in %d cells", cells), true, cells > 0)
	} else {
		add("zero errors in every cell", strings.Join(bad, "; "), false, true)
	}
	return out
}
