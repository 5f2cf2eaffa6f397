package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/agentd/agentd"
)

// On PostgreSQL every statement is a round trip to another process, and the
// writer's statements run one after another; most of a run's cost was waiting for
// them. So inside a batch (writer.tryPlain), RecordRun and SettleHold do not run
// at once: they are collected and, once every write of the batch has run, written
// by ONE statement for the whole batch (flush), just before the commit. If that
// statement fails, the batch is rolled back and run again statement by statement,
// which finds the write at fault and fails it alone.
//
// Deferring them changes nothing another write can see in a way that matters: what
// they change is relative (balance − cost, held − amount, counters + n), so a write
// that reads and sets an absolute value (a grant) still ends right once the flush
// applies them; a hold taken later in the same batch sees more held, never less,
// than after the flush (a settle gives back its whole hold, which covers the
// charge); a turn whose agent is deleted by a later write of the batch is dropped,
// as the deletion would have dropped it.

// deferred is what a batch's writes left for the flush.
type deferred struct {
	runs    []*Run
	settles []string // hold ids
	holds   []pendingHold
}

// pendingHold is a hold a write asked for (TakeHoldLater).
type pendingHold struct {
	h    *Hold
	days PeriodDays
	res  *HoldResult
}

// deferRun takes r for the flush, if the transaction defers.
func (t *Tx) deferRun(r *Run) bool {
	if t.deferred == nil || !t.deferOK {
		return false
	}
	t.deferred.runs = append(t.deferred.runs, r)
	return true
}

// deferSettle takes hold id for the flush, if the transaction defers.
func (t *Tx) deferSettle(id string) bool {
	if t.deferred == nil || !t.deferOK {
		return false
	}
	t.deferred.settles = append(t.deferred.settles, id)
	return true
}

// errFlush marks a failed flush: the batch is run again without deferring.
var errFlush = errors.New("store: the batch's run records failed together")

// flush writes every deferred record and settle of the batch in one statement.
func (t *Tx) flush(ctx context.Context) error {
	d := t.deferred
	if d == nil || len(d.runs)+len(d.settles)+len(d.holds) == 0 {
		return nil
	}
	rows, err := t.query(ctx, writeBatchQuery, d.batchArgs(t.d)...)
	if err != nil {
		return fmt.Errorf("%w: %w", errFlush, err)
	}
	return d.setHolds(rows, false)
}

// holdArgs are the arrays of agentd_take_holds.
func (d *deferred) holdArgs() []any {
	n := len(d.holds)
	ids, orgs, keys, daily, monthly := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	amounts, created, expires := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, p := range d.holds {
		ids[i], orgs[i], keys[i] = p.h.ID, p.h.OrgID, p.h.KeyID
		amounts[i], created[i], expires[i] = int64(p.h.Amount), p.h.Created, p.h.Expires
		daily[i], monthly[i] = p.days.Daily, p.days.Monthly
	}
	return []any{ids, orgs, keys, amounts, created, expires, daily, monthly}
}

// setHolds reads the outcome of every hold of the batch (ord, taken, key_short,
// available, budget, period) and closes rows. committed says the call that
// answered them has committed already (a one-call batch): an error then must not
// send the batch round again.
func (d *deferred) setHolds(rows *sql.Rows, committed bool) error {
	defer rows.Close()
	n, got := len(d.holds), 0
	for rows.Next() {
		var ord int
		var o holdOutcome
		if err := rows.Scan(&ord, &o.taken, &o.keyShort, &o.avail, &o.limit, &o.period); err != nil {
			if committed {
				// agentd_write_batch has committed: running the batch again would write
				// it twice. The callers learn of a failure they cannot undo.
				return fmt.Errorf("read the outcome of a committed batch: %w", err)
			}
			return fmt.Errorf("%w: %w", errFlush, err)
		}
		if ord < 1 || ord > n {
			return fmt.Errorf("%w: hold %d of %d", errFlush, ord, n)
		}
		p := d.holds[ord-1]
		p.res.Short, p.res.Budget, p.res.Err = o.result(p.h)
		got++
	}
	if err := rows.Err(); err != nil {
		// An error of the server rolled the call back (it is its own transaction);
		// a connection lost meanwhile leaves its outcome unknown: not a rerun either.
		if committed && pgCode(err) == "" {
			return fmt.Errorf("the outcome of a batch is unknown: %w", err)
		}
		return fmt.Errorf("%w: %w", errFlush, err)
	}
	if got != n {
		if committed {
			return fmt.Errorf("a committed batch answered %d outcomes for %d holds", got, n)
		}
		return fmt.Errorf("%w: %d outcomes for %d holds", errFlush, got, n)
	}
	return nil
}

// recordArgs are agentd_write_batch's 58 arrays of the records and settles; the
// 6 of their cache and reasoning tokens (ledger rows', then rollups'; migration
// 0008 put them last), the turns' tools (0009), the rollups' agent versions and
// their latency histogram's LatencyBuckets columns (0015), in that order, as
// tokens; and how many organizations they charge.
func (d *deferred) recordArgs() (args, tokens []any, orgs int) {
	var (
		l   ledgerCols
		u   = map[rollupKey]*rollupRow{}
		uk  []rollupKey
		ch  = map[string]int64{}
		chk []string
		ag  = map[string]*agentStats{}
		agk []string
		id  idemCols
		tu  turnCols
	)
	for _, r := range d.runs {
		row := &r.LedgerRow
		created := micros(row.CreatedAt)
		ok := row.Outcome == agentd.OutcomeOK
		l.add(row, created)
		k := rollupKey{org: row.OrgID, day: dayOf(created), agent: row.AgentID, version: row.AgentVersion, model: row.Model, key: row.KeyID}
		s := u[k]
		if s == nil {
			s = &rollupRow{}
			u[k] = s
			uk = append(uk, k)
		}
		s.name = row.AgentName // the name of the latest run
		s.in += int64(row.InputTokens)
		s.out += int64(row.OutputTokens)
		s.cached += int64(row.CachedInputTokens)
		s.written += int64(row.CacheWriteTokens)
		s.reasoning += int64(row.ReasoningTokens)
		s.cost += int64(row.Cost)
		if ok {
			s.runs++
			s.latency += row.LatencyMS
			s.hist[latencyBucket(row.LatencyMS)]++
		} else {
			s.failed++
		}
		if row.Cost > 0 {
			if _, seen := ch[row.OrgID]; !seen {
				chk = append(chk, row.OrgID)
			}
			ch[row.OrgID] += int64(row.Cost)
		}
		if row.AgentID != "" {
			a := ag[row.AgentID]
			if a == nil {
				a = &agentStats{lastUsed: -1}
				ag[row.AgentID] = a
				agk = append(agk, row.AgentID)
			}
			if ok {
				a.ok++
				a.latency += row.LatencyMS
				a.lastUsed = created
			} else {
				a.failed++
			}
		}
		if ok && r.Idem != nil {
			id.add(r.Idem)
		}
		if ok && r.Turn != nil {
			tu.add(row, r.Turn, created)
		}
	}
	var rc rollupCols
	for _, k := range uk {
		rc.add(k, u[k])
	}
	costs := make([]int64, len(chk))
	for i, org := range chk {
		costs[i] = ch[org]
	}
	var ac agentCols
	for _, a := range agk {
		ac.add(a, ag[a])
	}
	args = []any{d.settles, chk, costs}
	args = append(args, l.args()...)
	args = append(args, rc.args()...)
	args = append(args, ac.args()...)
	args = append(args, id.args()...)
	args = append(args, tu.args()...)
	tokens = []any{l.cached, l.written, l.reasoning, rc.cached, rc.written, rc.reasoning, tu.tools, rc.version}
	for i := range rc.hist {
		tokens = append(tokens, rc.hist[i])
	}
	return args, tokens, len(chk)
}

type ledgerCols struct {
	runID, org, key, owner, agent, agentName, session, modelRequested, model, source, outcome, errCode []string
	created, version, in, out, cost, latency, cached, written, reasoning                               []int64
}

func (c *ledgerCols) add(r *agentd.LedgerRow, created int64) {
	c.runID = append(c.runID, r.RunID)
	c.created = append(c.created, created)
	c.org = append(c.org, r.OrgID)
	c.key = append(c.key, r.KeyID)
	c.owner = append(c.owner, r.Owner)
	c.agent = append(c.agent, r.AgentID)
	c.agentName = append(c.agentName, r.AgentName)
	c.version = append(c.version, int64(r.AgentVersion))
	c.session = append(c.session, r.SessionID)
	c.modelRequested = append(c.modelRequested, r.ModelRequested)
	c.model = append(c.model, r.Model)
	c.in = append(c.in, int64(r.InputTokens))
	c.out = append(c.out, int64(r.OutputTokens))
	c.source = append(c.source, r.UsageSource)
	c.cost = append(c.cost, int64(r.Cost))
	c.latency = append(c.latency, r.LatencyMS)
	c.outcome = append(c.outcome, string(r.Outcome))
	c.errCode = append(c.errCode, r.ErrorCode)
	c.cached = append(c.cached, int64(r.CachedInputTokens))
	c.written = append(c.written, int64(r.CacheWriteTokens))
	c.reasoning = append(c.reasoning, int64(r.ReasoningTokens))
}

func (c *ledgerCols) args() []any {
	return []any{c.runID, c.created, c.org, c.key, c.owner, c.agent, c.agentName, c.version, c.session,
		c.modelRequested, c.model, c.in, c.out, c.source, c.cost, c.latency, c.outcome, c.errCode}
}

type rollupRow struct {
	name                                                             string
	runs, failed, in, out, cost, latency, cached, written, reasoning int64
	hist                                                             LatencyHist
}

type rollupCols struct {
	org, day, agent, name, model, key                                         []string
	version, runs, failed, in, out, cost, latency, cached, written, reasoning []int64
	hist                                                                      [LatencyBuckets][]int64
}

func (c *rollupCols) add(k rollupKey, s *rollupRow) {
	c.org = append(c.org, k.org)
	c.day = append(c.day, k.day)
	c.agent = append(c.agent, k.agent)
	c.name = append(c.name, s.name)
	c.model = append(c.model, k.model)
	c.key = append(c.key, k.key)
	c.runs = append(c.runs, s.runs)
	c.failed = append(c.failed, s.failed)
	c.in = append(c.in, s.in)
	c.out = append(c.out, s.out)
	c.cost = append(c.cost, s.cost)
	c.latency = append(c.latency, s.latency)
	c.cached = append(c.cached, s.cached)
	c.written = append(c.written, s.written)
	c.reasoning = append(c.reasoning, s.reasoning)
	c.version = append(c.version, int64(k.version))
	for i, n := range s.hist {
		c.hist[i] = append(c.hist[i], n)
	}
}

func (c *rollupCols) args() []any {
	return []any{c.org, c.day, c.agent, c.name, c.model, c.key, c.runs, c.failed, c.in, c.out, c.cost, c.latency}
}

type agentStats struct{ ok, latency, failed, lastUsed int64 }

type agentCols struct {
	id                            []string
	ok, latency, failed, lastUsed []int64
}

func (c *agentCols) add(id string, s *agentStats) {
	c.id = append(c.id, id)
	c.ok = append(c.ok, s.ok)
	c.latency = append(c.latency, s.latency)
	c.failed = append(c.failed, s.failed)
	c.lastUsed = append(c.lastUsed, s.lastUsed)
}

func (c *agentCols) args() []any { return []any{c.id, c.ok, c.latency, c.failed, c.lastUsed} }

type idemCols struct {
	org, key, idemKey, hash, runID, result []string
	created, expires                       []int64
}

func (c *idemCols) add(i *Idem) {
	c.org = append(c.org, i.OrgID)
	c.key = append(c.key, i.KeyID)
	c.idemKey = append(c.idemKey, i.Key)
	c.hash = append(c.hash, i.RequestHash)
	c.runID = append(c.runID, i.RunID)
	c.result = append(c.result, string(i.Result))
	c.created = append(c.created, i.Created)
	c.expires = append(c.expires, i.Expires)
}

func (c *idemCols) args() []any {
	return []any{c.org, c.key, c.idemKey, c.hash, c.runID, c.result, c.created, c.expires}
}

type turnCols struct {
	org, owner, agent, session, runID, user, assistant, tools []string // tools "" for none
	userTokens, assistantTokens, in, out, created             []int64
}

func (c *turnCols) add(r *agentd.LedgerRow, t *agentd.Turn, created int64) {
	c.org = append(c.org, r.OrgID)
	c.owner = append(c.owner, r.Owner)
	c.agent = append(c.agent, r.AgentID)
	c.session = append(c.session, r.SessionID)
	c.runID = append(c.runID, r.RunID)
	c.user = append(c.user, t.User)
	c.assistant = append(c.assistant, t.Assistant)
	c.tools = append(c.tools, toolsText(&t.TurnTools))
	c.userTokens = append(c.userTokens, int64(t.UserTokens))
	c.assistantTokens = append(c.assistantTokens, int64(t.AssistantTokens))
	c.in = append(c.in, int64(r.InputTokens))
	c.out = append(c.out, int64(r.OutputTokens))
	c.created = append(c.created, created)
}

func (c *turnCols) args() []any {
	return []any{c.org, c.owner, c.agent, c.session, c.runID, c.user, c.assistant,
		c.userTokens, c.assistantTokens, c.in, c.out, c.created}
}

// errNeedsTx is what a write that runs a statement of its own gets in a batch
// tried without a transaction (writer.tryBatch): the batch then runs the usual
// way.
var errNeedsTx = errors.New("store: the write needs a transaction")

// needsTx is the panic with which Tx's statement methods leave a write that runs
// in no transaction; runPlain turns it into errNeedsTx.
type needsTx struct{}

// writeBatchQuery calls agentd_write_batch (migration 0015) with the writers' lock
// key, the 58 arrays of the records (recordArgs), the 8 of the holds (holdArgs),
// the 6 of the records' cache and reasoning tokens, the turns' tools, the
// rollups' agent versions and their latency histograms, typed in that order.
var writeBatchQuery = func() string {
	const t, i = "TEXT[]", "BIGINT[]"
	kinds := []string{
		t, t, i, // settles; charged organizations, their charges
		t, i, t, t, t, t, t, i, t, t, t, i, i, t, i, i, t, t, // ledger rows
		t, t, t, t, t, t, i, i, i, i, i, i, // rollups
		t, i, i, i, i, // agent stats
		t, t, t, t, t, t, i, i, // idempotency records
		t, t, t, t, t, t, t, i, i, i, i, i, // session turns
		t, t, t, i, i, i, t, t, // holds
		i, i, i, i, i, i, // cache and reasoning tokens: ledger rows', rollups'
		t, // the turns' tools
		i, // the rollups' agent versions
	}
	for range LatencyBuckets {
		kinds = append(kinds, i) // the rollups' latency histograms, a bucket each
	}
	var b strings.Builder
	b.WriteString("SELECT ord, taken, key_short, available, budget, period FROM agentd_write_batch(CAST(? AS BIGINT)")
	for _, k := range kinds {
		b.WriteString(", CAST(? AS " + k + ")")
	}
	b.WriteString(")")
	return b.String()
}()

// batchArgs are agentd_write_batch's arguments for what the batch deferred.
func (d *deferred) batchArgs(dl dialect) []any {
	records, tokens, _ := d.recordArgs()
	args := append([]any{dl.writerLock}, records...)
	args = append(args, d.holdArgs()...)
	return append(args, tokens...)
}

// writeBatch writes what the batch's writes deferred in one call, as its own
// transaction: records, then holds, under the writers' lock.
func (d *deferred) writeBatch(ctx context.Context, db *sql.DB, dl dialect) error {
	rows, err := db.QueryContext(ctx, dl.rebind(writeBatchQuery), d.batchArgs(dl)...)
	if err != nil {
		if dl.retryable(err) || dl.isStorage(err) {
			return err
		}
		return fmt.Errorf("%w: %w", errFlush, err)
	}
	return d.setHolds(rows, true)
}
