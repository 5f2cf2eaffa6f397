package store

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// usageDay0 is the first day of generated usage: midnight UTC.
var usageDay0 = time.Date(2025, 3, 30, 0, 0, 0, 0, time.UTC).UnixMicro()

const dayMicros = int64(24 * time.Hour / time.Microsecond)

// usageWorld is a few organizations, agents, models and keys to draw runs from.
type usageWorld struct {
	orgs   []*agentd.Org
	agents map[string][]*agentd.Agent // by org id
	models []string
	keys   []string
}

func newUsageWorld(t testing.TB, db *DB) *usageWorld {
	t.Helper()
	w := &usageWorld{agents: map[string][]*agentd.Agent{}, models: []string{"offline", "gpt-x", "claude-y"}, keys: []string{"key-a", "key-b", "key-c"}}
	for _, name := range []string{"acme", "globex"} {
		o := newOrg(t, db, name, 1<<50)
		w.orgs = append(w.orgs, o)
		for _, an := range []string{"support", "sales", "triage"} {
			w.agents[o.ID] = append(w.agents[o.ID], newAgent(t, db, o.ID, an))
		}
	}
	return w
}

// genRuns makes n random runs over days days from usageDay0. Some share a
// created_at, to exercise the cursor's tie-break; about one in seven fails.
func (w *usageWorld) genRuns(rng *rand.Rand, n, days int) []*Run {
	runs := make([]*Run, n)
	var prev int64
	for i := range runs {
		o := w.orgs[rng.IntN(len(w.orgs))]
		a := w.agents[o.ID][rng.IntN(len(w.agents[o.ID]))]
		created := usageDay0 + rng.Int64N(int64(days)*dayMicros)
		if i > 0 && rng.IntN(8) == 0 {
			created = prev // a tie
		}
		prev = created
		r := &Run{LedgerRow: agentd.LedgerRow{
			RunID: fmt.Sprintf("run-%04d-%s", rng.IntN(10000), agentd.NewID("r")), CreatedAt: fromMicros(created),
			OrgID: o.ID, KeyID: w.keys[rng.IntN(len(w.keys))], Owner: "owner",
			AgentID: a.ID, AgentName: a.Name, AgentVersion: 1 + rng.IntN(2),
			ModelRequested: "offline", Model: w.models[rng.IntN(len(w.models))],
			// Every bucket of the latency histogram, up to 64 s.
			UsageSource: agentd.UsageProvider, LatencyMS: rng.Int64N(500) << rng.IntN(8), Outcome: agentd.OutcomeOK,
		}}
		if rng.IntN(7) == 0 {
			r.Outcome, r.ErrorCode, r.UsageSource = agentd.OutcomeFailed, string(agentd.EInferenceFailed), agentd.UsageEstimated
		} else {
			r.InputTokens, r.OutputTokens = 1+rng.IntN(2000), rng.IntN(800)
			r.Cost = agentd.Micros(rng.Int64N(5000))
		}
		runs[i] = r
	}
	return runs
}

// record writes runs through the writer from a few goroutines, several runs per
// transaction, as concurrent requests would.
func record(t testing.TB, db *DB, runs []*Run) { recordWith(t, db, runs, 4) }

// recordWith records runs from workers goroutines; with one, in order.
func recordWith(t testing.TB, db *DB, runs []*Run, workers int) {
	t.Helper()
	ctx := context.Background()
	const perTx = 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w * perTx; i < len(runs); i += workers * perTx {
				batch := runs[i:min(i+perTx, len(runs))]
				err := db.Tx(ctx, func(tx *Tx) error {
					for _, r := range batch {
						if _, err := tx.RecordRun(ctx, r); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// dailyRow is a usage_daily row.
type dailyRow struct {
	AgentName                                                string
	Runs, Failed, InputTokens, OutputTokens, Cost, LatencyMS int64
	Hist                                                     LatencyHist
}

// expectRollups computes usage_daily from runs in Go; the agent name is that of
// the last run recorded into each row.
func expectRollups(runs []*Run) map[rollupKey]dailyRow {
	want := map[rollupKey]dailyRow{}
	for _, r := range runs {
		k := rollupKey{r.OrgID, runDay(r), r.AgentID, r.AgentVersion, r.Model, r.KeyID}
		d := want[k]
		d.AgentName = r.AgentName
		if r.Outcome == agentd.OutcomeOK {
			d.Runs++
			d.LatencyMS += r.LatencyMS
			d.Hist[wantBucket(r.LatencyMS)]++
		} else {
			d.Failed++
		}
		d.InputTokens += int64(r.InputTokens)
		d.OutputTokens += int64(r.OutputTokens)
		d.Cost += int64(r.Cost)
		want[k] = d
	}
	return want
}

func readRollups(t testing.TB, db *DB) map[rollupKey]dailyRow {
	t.Helper()
	rows, err := db.query(context.Background(), `SELECT org_id, day, agent_id, agent_version, model, key_id, agent_name, runs, failed,
		input_tokens, output_tokens, cost, latency_ms, `+histList("", "")+` FROM usage_daily`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[rollupKey]dailyRow{}
	for rows.Next() {
		var k rollupKey
		var d dailyRow
		dest := []any{&k.org, &k.day, &k.agent, &k.version, &k.model, &k.key, &d.AgentName, &d.Runs, &d.Failed,
			&d.InputTokens, &d.OutputTokens, &d.Cost, &d.LatencyMS}
		for i := range d.Hist {
			dest = append(dest, &d.Hist[i])
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		got[k] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func diffRollups(t testing.TB, got, want map[rollupKey]dailyRow) {
	t.Helper()
	bad := 0
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			bad++
			if bad <= 5 {
				t.Errorf("rollup %+v = %+v (present %v), want %+v", k, g, ok, w)
			}
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			bad++
			if bad <= 5 {
				t.Errorf("unexpected rollup %+v = %+v", k, g)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d rollup rows differ in all", bad)
	}
}

// wantBucket is the histogram bucket of a latency, by the bounds written out:
// [0, 50], (50, 100], (100, 250], (250, 500], (500, 1000], (1000, 2500],
// (2500, 5000], (5000, 10000], (10000, 30000], above.
func wantBucket(ms int64) int {
	for i, b := range []int64{50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000} {
		if ms <= b {
			return i
		}
	}
	return 9
}

// runDay is the UTC day of r, as usage_daily names it.
func runDay(r *Run) string { return dayOf(micros(r.CreatedAt)) }

func checkClean(t testing.TB, db *DB) {
	t.Helper()
	problems, err := db.CheckRollups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("CheckRollups: %s", p)
	}
}

func newRNG(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// TestRollupsEqualLedger: after many random runs, recorded concurrently, every
// usage_daily row is the sum of its ledger rows, and the summaries and totals built
// on the rollups agree with sums computed over the runs themselves.
func TestRollupsEqualLedger(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{Synchronous: "OFF"})
	w := newUsageWorld(t, db)
	rng := newRNG(t)
	runs := w.genRuns(rng, 500, 9)
	// An agent renamed at the start of day 6: it is summarized under its new name.
	renamed := w.agents[w.orgs[0].ID][0]
	for _, r := range runs {
		if r.AgentID == renamed.ID && micros(r.CreatedAt) >= usageDay0+6*dayMicros {
			r.AgentName = "support_renamed"
		}
	}
	record(t, db, runs)

	diffRollups(t, readRollups(t, db), expectRollups(runs))
	checkClean(t, db)

	for _, o := range w.orgs {
		var mine []*Run
		for _, r := range runs {
			if r.OrgID == o.ID {
				mine = append(mine, r)
			}
		}
		ranges := []struct{ from, to string }{
			{"", ""},
			{dayOf(usageDay0 + 2*dayMicros), dayOf(usageDay0 + 5*dayMicros)},
			{dayOf(usageDay0 + 3*dayMicros), dayOf(usageDay0 + 3*dayMicros)},
			{"", dayOf(usageDay0)},
			{dayOf(usageDay0 + 20*dayMicros), ""},
		}
		for _, rg := range ranges {
			t.Run(fmt.Sprintf("%s %s-%s", o.Name, rg.from, rg.to), func(t *testing.T) {
				var in []*Run
				for _, r := range mine {
					d := runDay(r)
					if (rg.from == "" || d >= rg.from) && (rg.to == "" || d <= rg.to) {
						in = append(in, r)
					}
				}
				checkSummaries(t, db, o.ID, rg.from, rg.to, in)
				checkTotals(t, db, o.ID, rg.from, rg.to, "", in)
				a := w.agents[o.ID][1]
				var ofAgent []*Run
				for _, r := range in {
					if r.AgentID == a.ID {
						ofAgent = append(ofAgent, r)
					}
				}
				checkTotals(t, db, o.ID, rg.from, rg.to, a.ID, ofAgent)
			})
		}
	}
	t.Run("renamed agent is summarized under its latest name", func(t *testing.T) {
		rows, err := db.UsageSummary(ctx, w.orgs[0].ID, agentd.GroupByAgent, "", "")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range rows {
			names = append(names, r.Group)
			if r.AgentID == renamed.ID && r.Group != "support_renamed" {
				t.Errorf("renamed agent grouped as %q", r.Group)
			}
		}
		if len(names) != len(slices.Compact(slices.Clone(names))) {
			t.Errorf("an agent has several groups: %v", names)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		for _, c := range []struct{ groupBy, from, to string }{{"week", "", ""}, {"", "", ""}, {"day", "2025-13-01", ""}, {"day", "", "yesterday"}} {
			_, err := db.UsageSummary(ctx, w.orgs[0].ID, c.groupBy, c.from, c.to)
			wantCode(t, err, agentd.EInvalid)
		}
		_, err := db.UsageTotals(ctx, w.orgs[0].ID, "2025-03-30T00:00:00Z", "", "")
		wantCode(t, err, agentd.EInvalid)
	})
}

// checkSummaries compares UsageSummary, every grouping, with sums over runs.
func checkSummaries(t *testing.T, db *DB, orgID, from, to string, runs []*Run) {
	t.Helper()
	keyOf := map[string]func(r *Run) string{
		agentd.GroupByDay:     runDay,
		agentd.GroupByAgent:   func(r *Run) string { return r.AgentID },
		agentd.GroupByModel:   func(r *Run) string { return r.Model },
		agentd.GroupByKey:     func(r *Run) string { return r.KeyID },
		agentd.GroupByVersion: func(r *Run) string { return fmt.Sprintf("%s@%d", r.AgentID, r.AgentVersion) },
	}
	if len(keyOf) != len(GroupBys) {
		t.Fatalf("GroupBys = %v: a grouping is not tested", GroupBys)
	}
	for _, g := range GroupBys {
		want := map[string]*summaryRow{}
		for _, r := range runs {
			k := keyOf[g](r)
			s := want[k]
			if s == nil {
				s = &summaryRow{UsageRow: agentd.UsageRow{Group: k}}
				want[k] = s
			}
			if r.Outcome == agentd.OutcomeOK {
				s.Runs++
				s.latencyMS += r.LatencyMS
			} else {
				s.Failed++
			}
			s.InputTokens += int64(r.InputTokens)
			s.OutputTokens += int64(r.OutputTokens)
			s.Cost += r.Cost
		}
		got, err := db.UsageSummary(context.Background(), orgID, g, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("group by %s: %d groups, want %d", g, len(got), len(want))
		}
		if !slices.IsSortedFunc(got, func(a, b agentd.UsageRow) int { return cmp.Compare(a.Group, b.Group) }) {
			t.Errorf("group by %s: rows not in order of group", g)
		}
		for _, row := range got {
			k := row.Group
			switch g {
			case agentd.GroupByAgent:
				k = row.AgentID
			case agentd.GroupByVersion:
				k = fmt.Sprintf("%s@%d", row.AgentID, row.Version)
			}
			w := want[k]
			if w == nil {
				t.Errorf("group by %s: unexpected group %q", g, k)
				continue
			}
			wantAvg := 0.0
			if w.Runs > 0 {
				wantAvg = float64(w.latencyMS) / float64(w.Runs)
			}
			if row.Runs != w.Runs || row.Failed != w.Failed || row.InputTokens != w.InputTokens || row.OutputTokens != w.OutputTokens ||
				row.Cost != w.Cost || row.AvgLatencyMS != wantAvg {
				t.Errorf("group by %s, %q: got %+v, want %+v (avg latency %v)", g, k, row, *w, wantAvg)
			}
		}
	}
}

func checkTotals(t *testing.T, db *DB, orgID, from, to, agentID string, runs []*Run) {
	t.Helper()
	got, err := db.UsageTotals(context.Background(), orgID, from, to, agentID)
	if err != nil {
		t.Fatal(err)
	}
	want := agentd.UsageTotals{}
	perModel := map[string]*agentd.ModelUsage{}
	for _, r := range runs {
		m := perModel[r.Model]
		if m == nil {
			m = &agentd.ModelUsage{Model: r.Model}
			perModel[r.Model] = m
		}
		if r.Outcome == agentd.OutcomeOK {
			want.Runs++
			m.Runs++
		} else {
			want.Failed++
			m.Failed++
		}
		want.InputTokens += int64(r.InputTokens)
		want.OutputTokens += int64(r.OutputTokens)
		want.Cost += r.Cost
		m.InputTokens += int64(r.InputTokens)
		m.OutputTokens += int64(r.OutputTokens)
		m.Cost += r.Cost
	}
	if got.Runs != want.Runs || got.Failed != want.Failed || got.InputTokens != want.InputTokens ||
		got.OutputTokens != want.OutputTokens || got.Cost != want.Cost {
		t.Errorf("UsageTotals(agent %q) = %+v, want %+v", agentID, got, want)
	}
	if len(got.Models) != len(perModel) {
		t.Errorf("UsageTotals: %d models, want %d", len(got.Models), len(perModel))
	}
	for i, m := range got.Models {
		if w := perModel[m.Model]; w == nil || m != *w {
			t.Errorf("model %q: got %+v, want %+v", m.Model, m, w)
		}
		if i > 0 && got.Models[i-1].Runs < m.Runs {
			t.Errorf("models not ordered by runs: %+v", got.Models)
		}
	}
}

// TestCheckRollupsFindsDamage: the checker is worth running only if it notices a
// rollup that disagrees with the ledger, on any day of an organization never
// pruned, its first day included.
func TestCheckRollupsFindsDamage(t *testing.T) {
	ctx := context.Background()
	const rollupWhere = "(org_id, day, agent_id, agent_version, model, key_id) = (SELECT org_id, day, agent_id, agent_version, model, key_id FROM usage_daily WHERE org_id = ? AND day = ? AND runs > 0 LIMIT 1)"
	tests := []struct {
		name string
		// damage gets the org and a day that has runs.
		damage string
		want   string
		// also, when set, is a second problem the damage makes.
		also string
	}{
		{"cost off by one", `UPDATE usage_daily SET cost = cost + 1 WHERE (org_id, day, agent_id, agent_version, model, key_id) = (SELECT org_id, day, agent_id, agent_version, model, key_id FROM usage_daily WHERE org_id = ? AND day = ? AND runs > 0 LIMIT 1)`, "but the ledger sums to", ""},
		{"runs lost", `UPDATE usage_daily SET runs = runs + 1 WHERE (org_id, day, agent_id, agent_version, model, key_id) = (SELECT org_id, day, agent_id, agent_version, model, key_id FROM usage_daily WHERE org_id = ? AND day = ? AND runs > 0 LIMIT 1)`, "but the ledger sums to", ""},
		{"rollup row missing", `DELETE FROM usage_daily WHERE (org_id, day, agent_id, agent_version, model, key_id) = (SELECT org_id, day, agent_id, agent_version, model, key_id FROM usage_daily WHERE org_id = ? AND day = ? AND runs > 0 LIMIT 1)`, "there is no rollup", ""},
		{"histogram bucket off by one", `UPDATE usage_daily SET latency_gt_30000 = latency_gt_30000 + 1 WHERE ` + rollupWhere, "but the ledger sums to", ""},
		{"histogram run in the wrong bucket", `UPDATE usage_daily SET latency_le_50 = latency_le_50 + 1, latency_gt_30000 = latency_gt_30000 - 1 WHERE ` + rollupWhere, "but the ledger sums to", ""},
		{"rollup of another version", `UPDATE usage_daily SET agent_version = agent_version + 100 WHERE ` + rollupWhere, "there is no rollup", "the ledger has no rows"},
		{"rollup without runs", `INSERT INTO usage_daily (org_id, day, agent_id, agent_name, model, key_id, runs) VALUES (?, ?, 'agent-ghost', 'ghost', 'offline', 'key-a', 1)`, "the ledger has no rows", ""},
	}
	for _, tt := range tests {
		for _, day := range []int{0, 2} {
			t.Run(fmt.Sprintf("%s on day %d", tt.name, day), func(t *testing.T) {
				db := openDB(t, Options{Synchronous: "OFF"})
				w := newUsageWorld(t, db)
				runs := w.genRuns(newRNG(t), 60, 3)
				// Every day of org 0 has a run, the first one later than midnight.
				for d := range 3 {
					runs[d].OrgID, runs[d].CreatedAt = w.orgs[0].ID, fromMicros(usageDay0+int64(d)*dayMicros+1)
					runs[d].AgentID = w.agents[w.orgs[0].ID][0].ID
				}
				record(t, db, runs)
				checkClean(t, db)
				mustTx(t, db, func(tx *Tx) error {
					_, err := tx.exec(ctx, tt.damage, w.orgs[0].ID, dayOf(usageDay0+int64(day)*dayMicros))
					return err
				})
				problems, err := db.CheckRollups(ctx)
				if err != nil {
					t.Fatal(err)
				}
				want := []string{tt.want}
				if tt.also != "" {
					want = append(want, tt.also)
				}
				found := 0
				for _, p := range problems {
					if strings.Contains(p, w.orgs[0].ID) && slices.ContainsFunc(want, func(w string) bool { return strings.Contains(p, w) }) {
						found++
					}
				}
				if len(problems) != len(want) || found != len(want) {
					t.Errorf("CheckRollups = %q, want %d problems about %s containing %q", problems, len(want), w.orgs[0].ID, want)
				}
			})
		}
	}
}

// sortedRuns returns runs in ledger order.
func sortedRuns(runs []*Run) []*Run {
	out := slices.Clone(runs)
	slices.SortFunc(out, func(a, b *Run) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.RunID, b.RunID))
	})
	return out
}

// TestLedgerPage: paging with any page size and filter visits every matching row
// exactly once, in order, and nothing else.
func TestLedgerPage(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{Synchronous: "OFF"})
	w := newUsageWorld(t, db)
	runs := w.genRuns(newRNG(t), 300, 4)
	record(t, db, runs)
	ordered := sortedRuns(runs)
	org := w.orgs[0]
	agent := w.agents[org.ID][2]
	mid := ordered[len(ordered)/2].CreatedAt
	day2, day3 := fromMicros(usageDay0+dayMicros), fromMicros(usageDay0+2*dayMicros)
	filters := []struct {
		name  string
		f     agentd.LedgerFilter
		match func(r *Run) bool
	}{
		{"everything", agentd.LedgerFilter{}, func(r *Run) bool { return true }},
		{"agent", agentd.LedgerFilter{AgentID: agent.ID}, func(r *Run) bool { return r.AgentID == agent.ID }},
		{"key", agentd.LedgerFilter{KeyID: "key-b"}, func(r *Run) bool { return r.KeyID == "key-b" }},
		{"model", agentd.LedgerFilter{Model: "gpt-x"}, func(r *Run) bool { return r.Model == "gpt-x" }},
		{"from", agentd.LedgerFilter{From: mid}, func(r *Run) bool { return !r.CreatedAt.Before(mid) }},
		{"to", agentd.LedgerFilter{To: mid}, func(r *Run) bool { return r.CreatedAt.Before(mid) }},
		{"from and to, in another time zone", agentd.LedgerFilter{From: day2.In(time.FixedZone("X", 5*3600)), To: day3.In(time.FixedZone("Y", -7*3600))},
			func(r *Run) bool { return !r.CreatedAt.Before(day2) && r.CreatedAt.Before(day3) }},
		{"day two, key, model", agentd.LedgerFilter{From: day2, To: day3, KeyID: "key-a", Model: "offline"},
			func(r *Run) bool {
				return !r.CreatedAt.Before(day2) && r.CreatedAt.Before(day3) && r.KeyID == "key-a" && r.Model == "offline"
			}},
		{"nothing", agentd.LedgerFilter{Model: "no-such-model"}, func(r *Run) bool { return false }},
	}
	for _, ft := range filters {
		var want []string
		for _, r := range ordered {
			if r.OrgID == org.ID && ft.match(r) {
				want = append(want, r.RunID)
			}
		}
		for _, size := range []int{1, 7, 50, 1000} {
			t.Run(fmt.Sprintf("%s/limit %d", ft.name, size), func(t *testing.T) {
				f := ft.f
				f.OrgID, f.Limit = org.ID, size
				var got []string
				for pages := 0; ; pages++ {
					if pages > len(want)+1 {
						t.Fatal("paging does not end")
					}
					page, next, err := db.LedgerPage(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) > size {
						t.Fatalf("page of %d rows, limit %d", len(page), size)
					}
					if next != "" && len(page) != size {
						t.Fatalf("a short page (%d rows) has a next cursor", len(page))
					}
					for _, r := range page {
						if r.OrgID != org.ID {
							t.Fatalf("row %s of another organization", r.RunID)
						}
						got = append(got, r.RunID)
					}
					if next == "" {
						break
					}
					f.Cursor = next
				}
				if !slices.Equal(got, want) {
					t.Errorf("visited %d rows, want %d (in order, each once)", len(got), len(want))
				}
			})
		}
	}

	t.Run("rows are complete", func(t *testing.T) {
		page, _, err := db.LedgerPage(ctx, agentd.LedgerFilter{OrgID: org.ID, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]*Run{}
		for _, r := range runs {
			byID[r.RunID] = r
		}
		for _, r := range page {
			if byID[r.RunID].LedgerRow != r {
				t.Fatalf("stored %+v, recorded %+v", r, byID[r.RunID].LedgerRow)
			}
		}
	})

	t.Run("limits", func(t *testing.T) {
		many := w.genRuns(newRNG(t), 1100, 1)
		for _, r := range many {
			r.OrgID, r.AgentID = w.orgs[1].ID, w.agents[w.orgs[1].ID][0].ID
		}
		record(t, db, many)
		for _, c := range []struct{ limit, want int }{{0, agentd.DefaultLedgerPage}, {-3, agentd.DefaultLedgerPage}, {5000, agentd.MaxLedgerPage}, {agentd.MaxLedgerPage, agentd.MaxLedgerPage}} {
			page, next, err := db.LedgerPage(ctx, agentd.LedgerFilter{OrgID: w.orgs[1].ID, Limit: c.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) != c.want || next == "" {
				t.Errorf("limit %d: %d rows (next %q), want %d and a next page", c.limit, len(page), next, c.want)
			}
		}
	})

	t.Run("malformed cursor", func(t *testing.T) {
		b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
		for _, c := range []string{"!!!", "abc=", b64("123"), b64("123:"), b64("x:run-1"), b64("-5:run-1"), b64(":run-1"), b64("99999999999999999999:r")} {
			_, _, err := db.LedgerPage(ctx, agentd.LedgerFilter{OrgID: org.ID, Cursor: c})
			wantCode(t, err, agentd.EInvalid)
			var e *agentd.Error
			if errors.As(err, &e) && (len(e.Violations) != 1 || fmt.Sprint(e.Violations[0].Loc) != "[query cursor]") {
				t.Errorf("cursor %q: violations %+v", c, e.Violations)
			}
		}
		// A well-formed cursor from anywhere in the keyspace is fine.
		if _, _, err := db.LedgerPage(ctx, agentd.LedgerFilter{OrgID: org.ID, Cursor: ledgerCursor(0, "a")}); err != nil {
			t.Errorf("valid cursor: %v", err)
		}
	})
}

// TestPruneLedger: pruning deletes exactly the raw rows older than the cutoff,
// oldest first, in batches; rollups stay as they were and still check clean.
func TestPruneLedger(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{Synchronous: "OFF"})
	w := newUsageWorld(t, db)
	runs := w.genRuns(newRNG(t), 400, 6)
	record(t, db, runs)
	before := readRollups(t, db)
	summary := func() []agentd.UsageRow {
		rows, err := db.UsageSummary(ctx, w.orgs[0].ID, agentd.GroupByDay, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	sumBefore := summary()

	cutoffs := []int64{
		usageDay0 + dayMicros + dayMicros/3, // mid-day: leaves a partial day
		usageDay0 + 3*dayMicros,             // midnight
		usageDay0 + 6*dayMicros,             // everything
	}
	for _, cutoff := range cutoffs {
		t.Run(fmt.Sprint(time.UnixMicro(cutoff).UTC()), func(t *testing.T) {
			wantLeft := count(t, db, `SELECT count(*) FROM ledger WHERE created_at >= ?`, cutoff)
			old := count(t, db, `SELECT count(*) FROM ledger WHERE created_at < ?`, cutoff)
			// A small first batch stops mid-way through the old rows; the checker
			// must still be clean then.
			n, err := db.PruneLedger(ctx, cutoff, 7)
			if err != nil {
				t.Fatal(err)
			}
			if n != min(7, old) {
				t.Errorf("first batch deleted %d rows, want %d", n, min(7, old))
			}
			checkClean(t, db)
			total := n
			for n == 7 {
				if n, err = db.PruneLedger(ctx, cutoff, 7); err != nil {
					t.Fatal(err)
				}
				total += n
			}
			if total != old {
				t.Errorf("deleted %d rows, want %d", total, old)
			}
			if got := count(t, db, `SELECT count(*) FROM ledger`); got != wantLeft {
				t.Errorf("%d rows left, want %d", got, wantLeft)
			}
			diffRollups(t, readRollups(t, db), before)
			checkClean(t, db)
			if got := summary(); !slices.Equal(got, sumBefore) {
				t.Errorf("summary changed by pruning:\n%+v\nwas\n%+v", got, sumBefore)
			}
		})
	}
	if n, err := db.PruneLedger(ctx, cutoffs[2], 0); err != nil || n != 0 {
		t.Errorf("PruneLedger with limit 0 = %d, %v", n, err)
	}
}

// TestUsageMigrationBackfills: a database whose ledger was written before
// usage_daily existed gets rollups equal to the ones RecordRun keeps. The test
// writes the ledger, takes the rollups RecordRun kept, puts the database back in
// its state before migration 0002 and opens it again, which applies 0002.
func TestUsageMigrationBackfills(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentd.db")
	db, err := Open(ctx, "sqlite:"+path, Options{Synchronous: "OFF"})
	if err != nil {
		t.Fatal(err)
	}
	w := newUsageWorld(t, db)
	// In time order, so that "the last run recorded" (RecordRun) and "the latest
	// run" (the backfill) name the same agent name after a rename.
	runs := sortedRuns(w.genRuns(newRNG(t), 300, 5))
	renamed := w.agents[w.orgs[0].ID][0]
	for _, r := range runs[200:] {
		if r.AgentID == renamed.ID {
			r.AgentName = "renamed"
		}
	}
	recordWith(t, db, runs, 1)
	want := readRollups(t, db)
	diffRollups(t, want, expectRollups(runs))

	mustTx(t, db, func(tx *Tx) error {
		for _, q := range []string{
			`DROP TABLE usage_daily`,
			`DROP INDEX ledger_org_time_run`,
			`CREATE INDEX ledger_org_time ON ledger(org_id, created_at)`,
			`DELETE FROM schema_migrations WHERE version = 2`,
			// As before migration 6 too, which added columns to both tables.
			`ALTER TABLE ledger DROP COLUMN cached_input_tokens`,
			`ALTER TABLE ledger DROP COLUMN cache_write_tokens`,
			`ALTER TABLE ledger DROP COLUMN reasoning_tokens`,
			`DELETE FROM schema_migrations WHERE version = 6`,
			// And before 0013, which keyed the rollups by version (recomputed
			// from the ledger: the ledger is whole here).
			`DELETE FROM schema_migrations WHERE version = 13`,
		} {
			if _, err := tx.exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(ctx, "sqlite:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := count(t, db, `SELECT count(*) FROM schema_migrations WHERE version = 2`); n != 1 {
		t.Fatalf("migration 0002 recorded %d times", n)
	}
	diffRollups(t, readRollups(t, db), want)
	checkClean(t, db)
	for _, idx := range []struct {
		name string
		want int
	}{{"ledger_org_time_run", 1}, {"ledger_org_time", 0}} {
		if n := count(t, db, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?`, idx.name); n != idx.want {
			t.Errorf("index %s: %d, want %d", idx.name, n, idx.want)
		}
	}
}

// TestLedgerPagePlan: a page is an index range in index order, with no sort and no
// scan of other organizations' rows.
func TestLedgerPagePlan(t *testing.T) {
	db := openDB(t, Options{})
	rows, err := db.query(context.Background(), `EXPLAIN QUERY PLAN SELECT `+ledgerColumns+` FROM ledger
		WHERE org_id = ? AND created_at >= ? AND model = ? AND (created_at, run_id) > (?, ?) ORDER BY created_at, run_id LIMIT ?`,
		"org-a", 1, "m", 1, "r", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	p := strings.Join(plan, "; ")
	if !strings.Contains(p, "ledger_org_time_run") || strings.Contains(p, "TEMP B-TREE") {
		t.Errorf("plan %q: want a range of ledger_org_time_run without a sort", p)
	}
}

// BenchmarkPruneLedger measures retention: how many ledger rows a second the
// sweeper's batches of 1000 delete (synchronous=FULL), against the 8,000 runs a
// second the run path can write.
//
//	go test ./internal/store -run XXX -bench PruneLedger -benchtime 20000x
func BenchmarkPruneLedger(b *testing.B) {
	ctx := context.Background()
	db := openDB(b, Options{})
	o := newOrg(b, db, "acme", 1_000_000)
	a := newAgent(b, db, o.ID, "bot")
	const chunk = 500
	for i := 0; i < b.N; i += chunk {
		mustTx(b, db, func(tx *Tx) error {
			for j := i; j < min(i+chunk, b.N); j++ {
				r := okRun(a, "alice", "", 0)
				r.CreatedAt = time.UnixMicro(int64(1_700_000_000_000_000 + j))
				if _, err := tx.RecordRun(ctx, r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.ResetTimer()
	n := 0
	for {
		d, err := db.PruneLedger(ctx, 1_800_000_000_000_000, 1000)
		if err != nil {
			b.Fatal(err)
		}
		n += d
		if d < 1000 {
			break
		}
	}
	b.StopTimer()
	if n != b.N {
		b.Fatalf("pruned %d of %d rows", n, b.N)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
}
