package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// The usage record has two levels: the ledger (one row per run, pruned after the
// configured retention) and usage_daily (one row per organization, UTC day, agent,
// answering model and key, kept forever). Both are written in the same savepoint by
// RecordRun, so at any commit the rollups are the sums of the ledger rows.

// dayOf is the UTC day of a time in Unix microseconds, as usage_daily stores it.
func dayOf(micros int64) string { return fromMicros(micros).Format(time.DateOnly) }

// LatencyBounds are the inclusive upper bounds in milliseconds of the buckets of
// the rollups' latency histogram of successful runs; a last bucket holds the runs
// slower than the last bound. Log-spaced: the buckets are as wide, relatively, from
// a cached answer to a long agent loop. Each is a column of usage_daily,
// latency_le_<bound> and latency_gt_<last bound> (histColumns).
var LatencyBounds = [...]int64{50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000}

// LatencyBuckets is how many buckets the histogram has.
const LatencyBuckets = len(LatencyBounds) + 1

// LatencyHist counts successful runs by latency bucket (LatencyBounds).
type LatencyHist [LatencyBuckets]int64

// latencyBucket is the bucket of a latency in milliseconds.
func latencyBucket(ms int64) int {
	for i, b := range LatencyBounds {
		if ms <= b {
			return i
		}
	}
	return len(LatencyBounds)
}

// histColumns are usage_daily's histogram columns, in bucket order.
var histColumns = func() []string {
	cols := make([]string, 0, LatencyBuckets)
	for _, b := range LatencyBounds {
		cols = append(cols, fmt.Sprintf("latency_le_%d", b))
	}
	return append(cols, fmt.Sprintf("latency_gt_%d", LatencyBounds[len(LatencyBounds)-1]))
}()

// histList is histColumns joined by ", ", each with prefix (a table's alias and a
// dot, or "sum(" with suffix ")").
func histList(prefix, suffix string) string {
	var b strings.Builder
	for i, c := range histColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix + c + suffix)
	}
	return b.String()
}

// rollupQuery is rollup's upsert. The histogram adds one to the bucket of a
// successful run: its columns are 0 but that one.
var rollupQuery = func() string {
	var set strings.Builder
	for _, c := range histColumns {
		set.WriteString(",\n\t\t" + c + " = usage_daily." + c + " + excluded." + c)
	}
	return `INSERT INTO usage_daily (org_id, day, agent_id, agent_version, agent_name, model, key_id,
		runs, failed, input_tokens, output_tokens, cost, latency_ms, cached_input_tokens, cache_write_tokens, reasoning_tokens, ` +
		histList("", "") + `)
		VALUES (?` + strings.Repeat(", ?", 15+LatencyBuckets) + `)
		ON CONFLICT (org_id, day, agent_id, agent_version, model, key_id) DO UPDATE SET
		agent_name = excluded.agent_name,
		runs = usage_daily.runs + excluded.runs,
		failed = usage_daily.failed + excluded.failed,
		input_tokens = usage_daily.input_tokens + excluded.input_tokens,
		output_tokens = usage_daily.output_tokens + excluded.output_tokens,
		cost = usage_daily.cost + excluded.cost,
		latency_ms = usage_daily.latency_ms + excluded.latency_ms,
		cached_input_tokens = usage_daily.cached_input_tokens + excluded.cached_input_tokens,
		cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens,
		reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens` + set.String()
}()

// rollup adds the run r to its day's usage_daily row (of its agent version), its
// latency to the histogram when it succeeded. It is called by RecordRun right
// after the ledger insert, inside the same savepoint.
func (t *Tx) rollup(ctx context.Context, r *agentd.LedgerRow) error {
	runs, failed, latency := 1, 0, r.LatencyMS
	if r.Outcome != agentd.OutcomeOK {
		runs, failed, latency = 0, 1, 0
	}
	args := [16 + LatencyBuckets]any{r.OrgID, dayOf(micros(r.CreatedAt)), r.AgentID, r.AgentVersion, r.AgentName, r.Model, r.KeyID,
		runs, failed, r.InputTokens, r.OutputTokens, r.Cost, latency, r.CachedInputTokens, r.CacheWriteTokens, r.ReasoningTokens}
	for i := range LatencyBuckets {
		args[16+i] = 0
	}
	if runs == 1 {
		args[16+latencyBucket(r.LatencyMS)] = 1
	}
	if _, err := t.exec(ctx, rollupQuery, args[:]...); err != nil {
		return fmt.Errorf("usage rollup: %w", err)
	}
	return nil
}

// DefaultLatencyDays is how many days of rollups performance_metrics reads an
// agent's latency from.
const DefaultLatencyDays = 30

// AgentLatencyHist sums the latency histograms of an agent's rollups of the UTC
// days from fromDay (YYYY-MM-DD) on: a range of the rollups' primary key
// (organization, day), whatever retention pruned from the ledger. Rollups from
// before the histogram existed (migration 0013 on SQLite, 0015 on PostgreSQL,
// for days retention had pruned) count nothing.
func (db *DB) AgentLatencyHist(ctx context.Context, orgID, agentID, fromDay string) (h LatencyHist, err error) {
	defer wrap(&err, "store.AgentLatencyHist(%q)", agentID)
	dest := make([]any, LatencyBuckets)
	for i := range h {
		dest[i] = &h[i]
	}
	err = db.queryRow(ctx, `SELECT `+histList("COALESCE(sum(", "), 0)")+` FROM usage_daily
		WHERE org_id = ? AND day >= ? AND agent_id = ?`, orgID, fromDay, agentID).Scan(dest...)
	return h, err
}

// errLedgerCursor is the error for a cursor that LedgerPage did not make. Its
// location is the query parameter that carries cursors in the API.
func errLedgerCursor() error {
	return agentd.Invalid("cursor is malformed: pass next_cursor from a previous page unchanged", "value_error", "query", "cursor")
}

// ledgerCursor makes the opaque cursor that resumes after the row (created, runID).
func ledgerCursor(created int64, runID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(created, 10) + ":" + runID))
}

func parseLedgerCursor(c string) (created int64, runID string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", errLedgerCursor()
	}
	ts, id, ok := strings.Cut(string(b), ":")
	if !ok || id == "" {
		return 0, "", errLedgerCursor()
	}
	created, err = strconv.ParseInt(ts, 10, 64)
	if err != nil || created < 0 {
		return 0, "", errLedgerCursor()
	}
	return created, id, nil
}

const ledgerColumns = `run_id, created_at, org_id, key_id, owner, agent_id, agent_name, agent_version,
	session_id, model_requested, model, input_tokens, output_tokens, usage_source, cost, latency_ms, outcome, error_code,
	cached_input_tokens, cache_write_tokens, reasoning_tokens`

func scanRow(s interface{ Scan(...any) error }, r *agentd.LedgerRow) error {
	var created int64
	var outcome string
	err := s.Scan(&r.RunID, &created, &r.OrgID, &r.KeyID, &r.Owner, &r.AgentID, &r.AgentName, &r.AgentVersion,
		&r.SessionID, &r.ModelRequested, &r.Model, &r.InputTokens, &r.OutputTokens, &r.UsageSource, &r.Cost, &r.LatencyMS,
		&outcome, &r.ErrorCode, &r.CachedInputTokens, &r.CacheWriteTokens, &r.ReasoningTokens)
	r.CreatedAt, r.Outcome = fromMicros(created), agentd.Outcome(outcome)
	return err
}

// LedgerPage returns one page of an organization's ledger rows matching f, in
// (created_at, run_id) order, and the cursor of the next page ("" after the last).
// Pages are keyset-paginated: a page costs the same wherever it is, and rows
// written while a client pages appear at most once. A cursor LedgerPage did not
// make is an EInvalid error.
func (db *DB) LedgerPage(ctx context.Context, f agentd.LedgerFilter) (runs []agentd.LedgerRow, next string, err error) {
	defer wrap(&err, "store.LedgerPage(%q)", f.OrgID)
	limit := f.Limit
	if limit <= 0 {
		limit = agentd.DefaultLedgerPage
	}
	limit = min(limit, agentd.MaxLedgerPage)
	var q strings.Builder
	q.WriteString(`SELECT ` + ledgerColumns + ` FROM ledger WHERE org_id = ?`)
	args := []any{f.OrgID}
	cond := func(sql string, v any) {
		q.WriteString(" AND " + sql)
		args = append(args, v)
	}
	if !f.From.IsZero() {
		cond("created_at >= ?", micros(f.From))
	}
	if !f.To.IsZero() {
		cond("created_at < ?", micros(f.To))
	}
	if f.AgentID != "" {
		cond("agent_id = ?", f.AgentID)
	}
	if len(f.AgentNames) > 0 {
		q.WriteString(" AND agent_name IN (?" + strings.Repeat(", ?", len(f.AgentNames)-1) + ")")
		for _, n := range f.AgentNames {
			args = append(args, n)
		}
	}
	if f.AgentVersion != 0 {
		cond("agent_version = ?", f.AgentVersion)
	}
	if f.KeyID != "" {
		cond("key_id = ?", f.KeyID)
	}
	if f.Model != "" {
		cond("model = ?", f.Model)
	}
	if f.Cursor != "" {
		created, runID, err := parseLedgerCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		q.WriteString(" AND (created_at, run_id) > (?, ?)")
		args = append(args, created, runID)
	}
	// One row more than the page tells whether another page follows, so the last
	// page says so instead of leading to an empty one.
	q.WriteString(" ORDER BY created_at, run_id LIMIT ?")
	args = append(args, limit+1)
	rows, err := db.query(ctx, q.String(), args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	runs = make([]agentd.LedgerRow, 0, min(limit, 64))
	for rows.Next() {
		var r agentd.LedgerRow
		if err := scanRow(rows, &r); err != nil {
			return nil, "", err
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(runs) > limit {
		runs = runs[:limit]
		last := runs[limit-1]
		next = ledgerCursor(micros(last.CreatedAt), last.RunID)
	}
	return runs, next, nil
}

// GroupBys lists the groupings UsageSummary accepts.
var GroupBys = []string{agentd.GroupByDay, agentd.GroupByAgent, agentd.GroupByModel, agentd.GroupByKey, agentd.GroupByVersion}

// summaryRow is a UsageRow being summed, with its latency total.
type summaryRow struct {
	agentd.UsageRow
	latencyMS int64
}

func (r *summaryRow) add(o summaryRow) {
	r.Runs += o.Runs
	r.Failed += o.Failed
	r.InputTokens += o.InputTokens
	r.OutputTokens += o.OutputTokens
	r.CacheTokens.Add(o.CacheTokens)
	r.Cost += o.Cost
	r.latencyMS += o.latencyMS
}

// dayRange validates the optional inclusive day bounds of a rollup query and
// returns the SQL condition for them.
func dayRange(fromDay, toDay string) (string, []any, error) {
	var cond string
	var args []any
	for _, b := range []struct{ name, day, op string }{{"from", fromDay, ">="}, {"to", toDay, "<="}} {
		if b.day == "" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, b.day); err != nil {
			return "", nil, agentd.Errorf(agentd.EInvalid, "%s must be a day, YYYY-MM-DD; got %q", b.name, b.day)
		}
		cond += " AND day " + b.op + " ?"
		args = append(args, b.day)
	}
	return cond, args, nil
}

// UsageSummary sums an organization's rollups from fromDay to toDay (both
// inclusive, YYYY-MM-DD UTC, "" for open) by groupBy, one of GroupBys. Rows are in
// order of their group (agents by name; by version, each agent's versions in
// order, version 0 being the runs rolled up before versions were, on days whose
// ledger rows retention had pruned by then). Being built from rollups, it is whole
// even for days whose raw ledger rows were pruned.
func (db *DB) UsageSummary(ctx context.Context, orgID, groupBy, fromDay, toDay string) (_ []agentd.UsageRow, err error) {
	defer wrap(&err, "store.UsageSummary(%q, %q)", orgID, groupBy)
	var col string
	switch groupBy {
	case agentd.GroupByDay:
		col = "day"
	case agentd.GroupByModel:
		col = "model"
	case agentd.GroupByKey:
		col = "key_id"
	case agentd.GroupByAgent:
		// Grouped by id, and by name so that each group's latest name can be picked.
		col = "agent_id, agent_name"
	case agentd.GroupByVersion:
		// By agent and version, merged under the latest name likewise.
		col = "agent_id, agent_version, agent_name"
	default:
		return nil, agentd.Errorf(agentd.EInvalid, "group_by must be one of %s; got %q", strings.Join(GroupBys, ", "), groupBy)
	}
	rangeCond, rangeArgs, err := dayRange(fromDay, toDay)
	if err != nil {
		return nil, err
	}
	rows, err := db.query(ctx, `SELECT `+col+`, max(day), sum(runs), sum(failed), sum(input_tokens), sum(output_tokens),
		sum(cost), sum(latency_ms), sum(cached_input_tokens), sum(cache_write_tokens), sum(reasoning_tokens) FROM usage_daily WHERE org_id = ?`+rangeCond+` GROUP BY `+col,
		append([]any{orgID}, rangeArgs...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	type agentGroup struct {
		row     summaryRow
		lastDay string
	}
	type agentVersion struct {
		id      string
		version int
	}
	byAgent := groupBy == agentd.GroupByAgent || groupBy == agentd.GroupByVersion
	var out []summaryRow
	groups := map[agentVersion]*agentGroup{}
	for rows.Next() {
		var r summaryRow
		var lastDay string
		dest := []any{&r.Group}
		switch groupBy {
		case agentd.GroupByAgent:
			dest = []any{&r.AgentID, &r.Group}
		case agentd.GroupByVersion:
			dest = []any{&r.AgentID, &r.Version, &r.Group}
		}
		dest = append(dest, &lastDay, &r.Runs, &r.Failed, &r.InputTokens, &r.OutputTokens, &r.Cost, &r.latencyMS,
			&r.CachedInputTokens, &r.CacheWriteTokens, &r.ReasoningTokens)
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		if !byAgent {
			out = append(out, r)
			continue
		}
		// An agent renamed within the range has a group per name; merge them under
		// the name of its latest day.
		k := agentVersion{r.AgentID, r.Version}
		g := groups[k]
		if g == nil {
			groups[k] = &agentGroup{row: r, lastDay: lastDay}
			continue
		}
		g.row.add(r)
		if lastDay > g.lastDay || (lastDay == g.lastDay && r.Group > g.row.Group) {
			g.row.Group, g.lastDay = r.Group, lastDay
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, g := range groups {
		out = append(out, g.row)
	}
	slices.SortFunc(out, func(a, b summaryRow) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.AgentID, b.AgentID), cmp.Compare(a.Version, b.Version))
	})
	res := make([]agentd.UsageRow, len(out))
	for i, r := range out {
		res[i] = r.UsageRow
		if r.Runs > 0 {
			res[i].AvgLatencyMS = float64(r.latencyMS) / float64(r.Runs)
		}
	}
	return res, nil
}

// UsageTotals sums an organization's rollups from fromDay to toDay (inclusive,
// YYYY-MM-DD, "" for open), for one agent when agentID is not "".
func (db *DB) UsageTotals(ctx context.Context, orgID, fromDay, toDay, agentID string) (_ *agentd.UsageTotals, err error) {
	defer wrap(&err, "store.UsageTotals(%q)", orgID)
	cond, args, err := dayRange(fromDay, toDay)
	if err != nil {
		return nil, err
	}
	args = append([]any{orgID}, args...)
	if agentID != "" {
		cond += " AND agent_id = ?"
		args = append(args, agentID)
	}
	rows, err := db.query(ctx, `SELECT model, sum(runs), sum(failed), sum(input_tokens), sum(output_tokens), sum(cost),
		sum(cached_input_tokens), sum(cache_write_tokens), sum(reasoning_tokens) FROM usage_daily WHERE org_id = ?`+cond+` GROUP BY model`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := &agentd.UsageTotals{Models: []agentd.ModelUsage{}}
	for rows.Next() {
		var m agentd.ModelUsage
		if err := rows.Scan(&m.Model, &m.Runs, &m.Failed, &m.InputTokens, &m.OutputTokens, &m.Cost,
			&m.CachedInputTokens, &m.CacheWriteTokens, &m.ReasoningTokens); err != nil {
			return nil, err
		}
		t.Models = append(t.Models, m)
		t.Runs += m.Runs
		t.Failed += m.Failed
		t.InputTokens += m.InputTokens
		t.OutputTokens += m.OutputTokens
		t.CacheTokens.Add(m.CacheTokens)
		t.Cost += m.Cost
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(t.Models, func(a, b agentd.ModelUsage) int {
		return cmp.Or(cmp.Compare(b.Runs, a.Runs), cmp.Compare(a.Model, b.Model))
	})
	return t, nil
}

// PruneLedger deletes up to limit ledger rows created before before (Unix
// microseconds) and returns how many it deleted; a caller repeats until that is
// fewer than limit. Each organization loses its oldest rows first, and records in
// ledger_pruned that its rows from before on are whole, which is what Check
// compares. Rollups are never pruned: summaries, totals and budgets stay whole.
func (db *DB) PruneLedger(ctx context.Context, before int64, limit int) (n int, err error) {
	defer wrap(&err, "store.PruneLedger")
	if limit <= 0 {
		return 0, nil
	}
	// Per organization, so that each delete is a range of the (org_id, created_at,
	// run_id) index rather than a scan of the whole ledger.
	rows, err := db.query(ctx, `SELECT id FROM orgs ORDER BY id`)
	if err != nil {
		return 0, err
	}
	var orgs []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		orgs = append(orgs, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	err = db.Tx(ctx, func(t *Tx) error {
		n = 0
		for _, org := range orgs {
			if n >= limit {
				break
			}
			res, err := t.exec(ctx, `DELETE FROM ledger WHERE run_id IN (SELECT run_id FROM ledger
				WHERE org_id = ? AND created_at < ? ORDER BY created_at, run_id LIMIT ?)`, org, before, limit-n)
			if err != nil {
				return err
			}
			c, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if c > 0 {
				if _, err := t.exec(ctx, `INSERT INTO ledger_pruned (org_id, pruned_before) VALUES (?, ?)
					ON CONFLICT (org_id) DO UPDATE SET pruned_before = `+t.d.greatest+`(ledger_pruned.pruned_before, excluded.pruned_before)`, org, before); err != nil {
					return err
				}
			}
			n += int(c)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// rollupKey names one usage_daily row.
type rollupKey struct {
	org, day, agent string
	version         int
	model, key      string
}

type rollupSums struct {
	runs, failed, in, out, cost, latency, cached, written, reasoning int64
	hist                                                             LatencyHist
}

func (s rollupSums) String() string {
	return fmt.Sprintf("runs %d, failed %d, input_tokens %d, output_tokens %d, cost %d, latency_ms %d, cached_input_tokens %d, cache_write_tokens %d, reasoning_tokens %d, latency histogram %v",
		s.runs, s.failed, s.in, s.out, s.cost, s.latency, s.cached, s.written, s.reasoning, s.hist)
}

// CheckRollups compares the rollups with the ledger and describes every
// difference. The days whose raw rows retention has not touched (those starting at
// or after the organization's ledger_pruned mark, or every day of an organization
// never pruned) are whole: their rollups must equal the sums of their ledger rows
// exactly, row for row (day, agent, version, model, key), latency histogram
// included. Earlier days are not checked. It
// reads the whole ledger.
func (db *DB) CheckRollups(ctx context.Context) (problems []string, err error) {
	defer wrap(&err, "store.CheckRollups")
	pruned, err := db.prunedMarks(ctx)
	if err != nil {
		return nil, err
	}
	ledger := map[rollupKey]*rollupSums{}
	rows, err := db.query(ctx, `SELECT org_id, created_at, agent_id, agent_version, model, key_id, outcome,
		input_tokens, output_tokens, cost, latency_ms, cached_input_tokens, cache_write_tokens, reasoning_tokens FROM ledger`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k rollupKey
		var created int64
		var outcome string
		var in, out, cost, latency, cached, written, reasoning int64
		if err := rows.Scan(&k.org, &created, &k.agent, &k.version, &k.model, &k.key, &outcome, &in, &out, &cost, &latency, &cached, &written, &reasoning); err != nil {
			return nil, err
		}
		k.day = dayOf(created)
		s := ledger[k]
		if s == nil {
			s = &rollupSums{}
			ledger[k] = s
		}
		if outcome == string(agentd.OutcomeOK) {
			s.runs++
			s.latency += latency
			s.hist[latencyBucket(latency)]++
		} else {
			s.failed++
		}
		s.in += in
		s.out += out
		s.cost += cost
		s.cached += cached
		s.written += written
		s.reasoning += reasoning
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()

	rows, err = db.query(ctx, `SELECT org_id, day, agent_id, agent_version, model, key_id, runs, failed,
		input_tokens, output_tokens, cost, latency_ms, cached_input_tokens, cache_write_tokens, reasoning_tokens, `+histList("", "")+` FROM usage_daily`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	whole := func(k rollupKey) bool {
		mark, ok := pruned[k.org]
		if !ok {
			return true
		}
		day, err := time.Parse(time.DateOnly, k.day)
		return err == nil && mark <= day.UnixMicro()
	}
	describe := func(k rollupKey) string {
		return fmt.Sprintf("org %s day %s agent %s version %d model %s key %s", k.org, k.day, k.agent, k.version, k.model, k.key)
	}
	seen := map[rollupKey]bool{}
	for rows.Next() {
		var k rollupKey
		var r rollupSums
		dest := []any{&k.org, &k.day, &k.agent, &k.version, &k.model, &k.key, &r.runs, &r.failed, &r.in, &r.out, &r.cost, &r.latency,
			&r.cached, &r.written, &r.reasoning}
		for i := range r.hist {
			dest = append(dest, &r.hist[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		if !whole(k) {
			continue
		}
		seen[k] = true
		switch l := ledger[k]; {
		case l == nil:
			problems = append(problems, fmt.Sprintf("%s: rollup has %v but the ledger has no rows", describe(k), r))
		case *l != r:
			problems = append(problems, fmt.Sprintf("%s: rollup has %v but the ledger sums to %v", describe(k), r, *l))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for k, l := range ledger {
		if whole(k) && !seen[k] {
			problems = append(problems, fmt.Sprintf("%s: ledger sums to %v but there is no rollup", describe(k), *l))
		}
	}
	slices.Sort(problems)
	return problems, nil
}

// prunedMarks returns, per organization that retention has pruned, the time from
// which its ledger rows are whole (unix micros).
func (db *DB) prunedMarks(ctx context.Context) (map[string]int64, error) {
	rows, err := db.query(ctx, `SELECT org_id, pruned_before FROM ledger_pruned`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	marks := map[string]int64{}
	for rows.Next() {
		var org string
		var before int64
		if err := rows.Scan(&org, &before); err != nil {
			return nil, err
		}
		marks[org] = before
	}
	return marks, rows.Err()
}

// LedgerWhole reports whether an organization's ledger still holds every row it
// ever had from since on (retention has not pruned past since).
func (db *DB) LedgerWhole(ctx context.Context, orgID string, since time.Time) (bool, error) {
	var before int64
	err := db.queryRow(ctx, `SELECT pruned_before FROM ledger_pruned WHERE org_id = ?`, orgID).Scan(&before)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("store.LedgerWhole(%q): %w", orgID, err)
	}
	return before <= micros(since), nil
}

// LedgerSpent sums the costs of a key's ledger rows created at or after since.
func (db *DB) LedgerSpent(ctx context.Context, keyID string, since time.Time) (spent agentd.Micros, err error) {
	defer wrap(&err, "store.LedgerSpent(%q)", keyID)
	err = db.queryRow(ctx, `SELECT COALESCE(sum(cost), 0) FROM ledger WHERE key_id = ? AND created_at >= ?`, keyID, micros(since)).Scan(&spent)
	return spent, err
}
