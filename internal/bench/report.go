package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Report is what a run measured. Durations in its JSON are nanoseconds.
type Report struct {
	Machine   Machine   `json:"machine"`
	Started   time.Time `json:"started"`
	Quick     bool      `json:"quick"`
	Duration  int64     `json:"cell_duration_ns"`
	Warmup    int64     `json:"cell_warmup_ns"`
	Tokens    int       `json:"upstream_tokens"`
	SlowNS    int64     `json:"slow_upstream_latency_ns"`
	Window    int       `json:"context_window"`
	Rows      []Row     `json:"rows"`
	Targets   []Check   `json:"targets"`
	Notes     []string  `json:"notes,omitempty"`
	Checked   string    `json:"agentd_check,omitempty"` // agentd check's output after the run
	GrowthMax int       `json:"growth_turns"`
}

// Row is one cell of the matrix.
type Row struct {
	ID          string  `json:"id"`
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	NA          string  `json:"na,omitempty"`
	Requests    int64   `json:"requests"`
	Seconds     float64 `json:"seconds"`
	Throughput  float64 `json:"req_per_s"`
	// TTFB says the latency columns are time to first content of a stream;
	// WholeP50 is then the whole request's median.
	TTFB     bool          `json:"ttfb,omitempty"`
	WholeP50 time.Duration `json:"whole_p50_ns,omitempty"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
	Mean     time.Duration `json:"mean_ns"`
	// Direct is the row this one's added latency is measured against.
	Direct   string         `json:"direct,omitempty"`
	Turns    string         `json:"turns,omitempty"` // session growth: which turns
	AddedP50 *time.Duration `json:"added_p50_ns,omitempty"`
	// Gateway is the process whose CPU and memory the row reports.
	Gateway          string         `json:"gateway,omitempty"`
	GatewayCPUPerReq *time.Duration `json:"gateway_cpu_per_req_ns,omitempty"`
	GatewayPeakRSS   int64          `json:"gateway_peak_rss_bytes,omitempty"`
	// BenchCPUPerReq is this process's CPU per request: load generator and
	// upstream (and the proxy when it runs in process).
	BenchCPUPerReq time.Duration `json:"bench_cpu_per_req_ns,omitempty"`
	// OtherCores is the CPU other processes on the machine used during the
	// window, in cores (/proc/stat less this process and the gateway).
	OtherCores float64          `json:"other_cores"`
	Errors     map[string]int64 `json:"errors"`
	// Open loop: sends scheduled in the window, dropped, and late (> 1 ms).
	Scheduled    int64             `json:"scheduled,omitempty"`
	Dropped      int64             `json:"dropped,omitempty"`
	Late         int64             `json:"late,omitempty"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
}

// Check is one target of the issue, judged on this run's rows.
type Check struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // PASS, FAIL, or "not measured"
}

// Machine describes where the numbers come from.
type Machine struct {
	CPU      string  `json:"cpu"`
	Cores    int     `json:"cores"`
	MemGiB   float64 `json:"mem_gib"`
	OS       string  `json:"os"`
	Kernel   string  `json:"kernel"`
	Go       string  `json:"go"`
	ClockTck string  `json:"clock_tick"`
}

func newReport(o RunOptions) *Report {
	return &Report{
		Machine: machine(), Started: time.Now().UTC().Truncate(time.Second), Quick: o.Quick,
		Duration: int64(o.Duration), Warmup: int64(o.Warmup), Tokens: o.Tokens, SlowNS: int64(o.SlowLatency),
		Window: o.ContextWindow, GrowthMax: o.GrowthTurns, Rows: []Row{},
	}
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), ClockTck: ClockTick().String()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.MemGiB = float64(kibibytes(v)) / (1 << 30)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// RowOf is the row of a load test's result; with ttfb the latency columns are
// its streams' time to first content.
func RowOf(id, scenario string, c int, ttfb bool, res *Result) Row {
	r := Row{ID: id, Scenario: scenario, Concurrency: c, TTFB: ttfb, Errors: map[string]int64{}}
	r.fill(res)
	return r
}

// fill takes a load test's numbers.
func (r *Row) fill(res *Result) {
	h := &res.Latency
	if r.TTFB {
		h = &res.TTFB
		r.WholeP50 = res.Latency.Quantile(0.5)
	}
	r.fillHist(h, res.Elapsed)
	r.Requests = res.Requests
	r.Throughput = res.Throughput()
	for k, n := range res.Errors {
		r.Errors[k] += n
	}
	if len(res.ErrorSample) > 0 {
		r.ErrorSamples = res.ErrorSample
	}
	r.Scheduled, r.Dropped, r.Late = res.Scheduled, res.Dropped, res.Late
	if res.Dropped > 0 {
		r.Errors["dropped (open loop)"] += res.Dropped
	}
}

// fillHist takes the quantiles of h; elapsed is the time its requests took.
func (r *Row) fillHist(h *Histogram, elapsed time.Duration) {
	r.Requests = h.Count()
	r.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		r.Throughput = float64(h.Count()) / elapsed.Seconds()
	}
	r.P50, r.P90, r.P99, r.Max, r.Mean = h.Quantile(0.5), h.Quantile(0.9), h.Quantile(0.99), h.Max(), h.Mean()
}

func (r *Row) errorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// row finds a measured row by id and concurrency.
func (rep *Report) row(id string, c int) *Row {
	for i := range rep.Rows {
		if r := &rep.Rows[i]; r.ID == id && r.Concurrency == c && r.NA == "" {
			return r
		}
	}
	return nil
}

// finish computes the added latencies and judges the targets.
func (rep *Report) finish() {
	for i := range rep.Rows {
		r := &rep.Rows[i]
		if r.Direct == "" || r.NA != "" || r.Requests == 0 {
			continue
		}
		if d := rep.row(r.Direct, r.Concurrency); d != nil && d.Requests > 0 {
			added := r.P50 - d.P50
			r.AddedP50 = &added
		}
	}
	rep.Targets = rep.checks()
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteMarkdown writes the report as markdown: a line about the machine and the
// cells, the table of rows, the table of targets, and notes.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	m := rep.Machine
	fmt.Fprintf(w, "Machine: %d × %s, %.0f GiB, %s (kernel %s), %s; load generator, upstream, proxy and agentd share it.\n",
		m.Cores, m.CPU, m.MemGiB, m.OS, m.Kernel, m.Go)
	fmt.Fprintf(w, "Cells: %s measured after %s of warm-up (closed loop); upstream replies of %d pieces; slow upstream %s; agentd on SQLite, synchronous=FULL; context window %d tokens.\n\n",
		time.Duration(rep.Duration), time.Duration(rep.Warmup), rep.Tokens, time.Duration(rep.SlowNS), rep.Window)

	WriteRowsMarkdown(w, rep.Rows)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | result |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, c := range rep.Targets {
		fmt.Fprintf(w, "| %s | %s | %s |\n", c.Target, c.Measured, c.Verdict)
	}
	if len(rep.Notes) > 0 || rep.Checked != "" {
		fmt.Fprintln(w)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if rep.Checked != "" {
		fmt.Fprintf(w, "- agentd check after the run: %s\n", strings.ReplaceAll(rep.Checked, "\n", "; "))
	}
	writeErrorSamples(w, rep.Rows)
	return nil
}

// WriteRowsJSON writes rows as indented JSON.
func WriteRowsJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// WriteRowsMarkdown writes rows as a markdown table, then one example of each
// kind of error.
func WriteRowsMarkdown(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| id | scenario | c | req/s | p50 | p90 | p99 | max | +p50 vs direct | gateway CPU/req | gateway peak RSS | errors |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rows {
		if r.NA != "" {
			fmt.Fprintf(w, "| %s | %s | %d | %s | | | | | | | | |\n", r.ID, r.Scenario, r.Concurrency, r.NA)
			continue
		}
		scen := r.Scenario
		if r.TTFB {
			scen += fmt.Sprintf(" (whole request p50 %s)", dur(r.WholeP50))
		}
		added, cpu, rss := "—", "—", "—"
		if r.AddedP50 != nil {
			added = signed(*r.AddedP50)
		}
		if r.GatewayCPUPerReq != nil {
			cpu = micros(*r.GatewayCPUPerReq)
		}
		if r.GatewayPeakRSS > 0 {
			rss = fmt.Sprintf("%.1f MiB", float64(r.GatewayPeakRSS)/mib)
		}
		if r.Gateway != "" && r.Gateway != "agentd" && r.Gateway != "proxy" {
			scen += " [" + r.Gateway + "]"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.ID, scen, r.Concurrency, num(r.Throughput), dur(r.P50), dur(r.P90), dur(r.P99), dur(r.Max), added, cpu, rss, errorsCell(r.Errors))
	}
}

// writeErrorSamples lists one message of each kind of error of each row.
func writeErrorSamples(w io.Writer, rows []Row) {
	for _, r := range rows {
		keys := make([]string, 0, len(r.ErrorSamples))
		for k := range r.ErrorSamples {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "- %s c=%d, %s: %s\n", r.ID, r.Concurrency, k, oneLine(r.ErrorSamples[k], 200))
		}
	}
}

func errorsCell(errs map[string]int64) string {
	var n int64
	keys := make([]string, 0, len(errs))
	for k, c := range errs {
		n += c
		keys = append(keys, k)
	}
	if n == 0 {
		return "0"
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, errs[k]))
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// num formats a rate with thousands separators.
func num(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	if f < 100 {
		s = strconv.FormatFloat(f, 'f', 1, 64)
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// dur formats a latency: µs below a millisecond, then ms, then s.
func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func signed(d time.Duration) string {
	if d < 0 {
		return "−" + dur(-d)
	}
	return "+" + dur(d)
}

func micros(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }
