package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
)

// ErrQueueFull is returned when the writer's queue is full; the API answers 503.
var ErrQueueFull = &agentd.Error{Code: agentd.EUnavailable, Message: "the database is overloaded; retry shortly"}

// errClosed is returned for writes submitted after Close.
var errClosed = &agentd.Error{Code: agentd.EUnavailable, Message: "the server is shutting down"}

type writeReq struct {
	fn        func(*Tx) error
	announced bool       // counted in writer.expected until the writer takes it
	records   bool       // a run record or hold (TxRecords): its statements may be deferred
	done      chan error // buffered(1)
	hooks     []func()   // registered by fn through Tx.OnCommit
}

// writer is the single goroutine that owns the write connection. It takes what is
// queued, waits a little longer while writes it was told to expect have not arrived
// yet, and commits them all in one transaction.
type writer struct {
	db       *sql.DB
	d        dialect
	n        *notifier
	stmts    *stmtCache
	queue    chan *writeReq
	maxBatch int
	maxWait  time.Duration
	expected atomic.Int64                   // writes announced (Expect) but not yet queued
	obs      atomic.Pointer[commitObserver] // told about each commit (observe.go); nil: nobody

	mu     sync.RWMutex // guards closed against sends racing close
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

var reqPool = sync.Pool{New: func() any { return &writeReq{done: make(chan error, 1)} }}

func newWriter(db *sql.DB, d dialect, n *notifier, maxBatch int, maxWait time.Duration) *writer {
	if maxBatch <= 0 {
		maxBatch = 256
	}
	if maxWait <= 0 {
		maxWait = time.Millisecond
	}
	w := &writer{db: db, d: d, n: n, stmts: newStmtCache(db), queue: make(chan *writeReq, 4096), maxBatch: maxBatch, maxWait: maxWait, stop: make(chan struct{})}
	w.wg.Add(1)
	go w.loop()
	return w
}

// do queues fn and waits for the commit that contains it. Once queued, the write
// happens whatever ctx does: the caller waits for the outcome so that it never
// reports failure for a write that committed.
// When announced, the write was counted in expected and stops counting once queued
// (or refused).
func (w *writer) do(ctx context.Context, fn func(*Tx) error, announced, records bool) error {
	r := reqPool.Get().(*writeReq)
	r.fn, r.announced, r.records = fn, announced, records
	if err := w.enqueue(r); err != nil {
		if announced {
			w.expected.Add(-1)
		}
		r.fn = nil
		reqPool.Put(r)
		return err
	}
	err := <-r.done
	clear(r.hooks) // drop what the closures hold
	r.fn, r.hooks = nil, r.hooks[:0]
	reqPool.Put(r)
	return err
}

// accepting reports whether a write queued now would be taken: the writer is
// open and its queue has room.
func (w *writer) accepting() bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return !w.closed && len(w.queue) < cap(w.queue)
}

// take accounts for a request leaving the queue: an announced write stops being
// expected the moment the writer holds it, so the writer never waits for itself.
func (w *writer) take(r *writeReq) *writeReq {
	if r.announced {
		w.expected.Add(-1)
	}
	return r
}

func (w *writer) enqueue(r *writeReq) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errClosed
	}
	select {
	case w.queue <- r:
		return nil
	default:
		return ErrQueueFull
	}
}

func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.stop)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func (w *writer) loop() {
	defer w.wg.Done()
	defer w.stmts.close()
	batch := make([]*writeReq, 0, w.maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *writeReq
		select {
		case r := <-w.queue:
			first = w.take(r)
		case <-w.stop:
			// Drain: everything queued before close still gets written.
			for {
				select {
				case r := <-w.queue:
					began := time.Now()
					w.commit([]*writeReq{w.take(r)})
					w.observe(1, began)
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
		batch = w.fill(batch, timer)
		began := time.Now()
		w.commit(batch)
		w.observe(len(batch), began)
	}
}

// fill adds queued writes to batch; while writes that were announced have not all
// arrived, it waits up to maxWait for them. Waiting only for announced writes keeps
// an idle server's single request from paying the wait.
func (w *writer) fill(batch []*writeReq, timer *time.Timer) []*writeReq {
	deadline := time.Time{}
	for len(batch) < w.maxBatch {
		select {
		case r := <-w.queue:
			batch = append(batch, w.take(r))
			continue
		default:
		}
		if w.expected.Load() <= 0 {
			return batch
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(w.maxWait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return batch
		}
		timer.Reset(left)
		select {
		case r := <-w.queue:
			batch = append(batch, w.take(r))
		case <-timer.C:
			return batch
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
	return batch
}

// commit runs every write of the batch in its own savepoint inside one transaction,
// runs the commit hooks of the writes that committed, in order, and tells each
// caller the truth about its own write.
func (w *writer) commit(batch []*writeReq) {
	if w.d.optimistic {
		w.commitOptimistic(batch)
		return
	}
	errs, broken, cause := w.try(batch)
	// A serialization failure or deadlock (PostgreSQL) ends a transaction that
	// would succeed run again: rerun the whole batch, a few times.
	for attempt := 1; w.d.retryable != nil && attempt <= maxRetries && w.retry(errs, broken, cause); attempt++ {
		time.Sleep(time.Duration(attempt) * time.Millisecond)
		errs, broken, cause = w.try(batch)
	}
	if !broken {
		for i, r := range batch {
			r.done <- errs[i]
		}
		return
	}
	// SQLite rolled the whole transaction back under one write (an I/O error, say),
	// so nothing of the batch committed. Redo each write alone, so that one bad
	// write cannot fail or lose the others.
	for _, r := range batch {
		errs, broken, cause := w.try([]*writeReq{r})
		if broken {
			if cause == nil {
				cause = fmt.Errorf("savepoint could not be released")
			}
			errs = []error{fmt.Errorf("write aborted its transaction: %w", cause)}
		}
		r.done <- errs[0]
	}
}

// commitOptimistic runs the batch's writes in one transaction without a savepoint
// each, which on a database across the network saves two round trips per write:
// most batches have no failing write. When one fails, the transaction is rolled
// back and nothing of it stays; the writes before it and after it are committed
// again as batches of their own, and the failing write alone, in a savepoint, so
// that every caller still learns the truth about its own write.
func (w *writer) commitOptimistic(batch []*writeReq) {
	if len(batch) == 0 {
		return
	}
	// A batch of nothing but run records and holds (the run path) is one function
	// call; then the batch in a transaction with its records deferred to one
	// statement; if that fails, statement by statement, to find the write at fault.
	if w.tryBatch(batch) {
		return
	}
	deferring := true
	batch, errs, failed, err := w.tryPlain(batch, deferring, true)
	for attempt := 1; err != nil && attempt <= maxRetries; attempt++ {
		switch {
		case errors.Is(err, errFlush):
			deferring = false
		case w.d.retryable(err):
			time.Sleep(time.Duration(attempt) * time.Millisecond)
		default:
			attempt = maxRetries // a failure of the database: no rerun helps
			continue
		}
		batch, errs, failed, err = w.tryPlain(batch, deferring, false)
	}
	switch {
	case failed >= 0 && len(batch) == 1:
		batch[0].done <- errs[0] // rolled back: its own outcome
	case failed >= 0:
		w.commitOptimistic(batch[:failed])
		w.commitAlone(batch[failed])
		w.commitOptimistic(batch[failed+1:])
	case err != nil:
		for _, r := range batch {
			r.done <- err
		}
	default:
		for i, r := range batch {
			r.done <- errs[i]
		}
	}
}

// tryBatch runs the batch's writes with no transaction, collecting what they
// defer, and writes it all with one call of agentd_write_batch, which is its own
// transaction. It reports false, having written and told nothing, when a write
// needs a transaction of its own (it ran a statement, or failed) or the call
// failed for a reason a transaction may avoid; the caller then runs the batch the
// usual way.
func (w *writer) tryBatch(batch []*writeReq) bool {
	if w.d.writerLock == 0 {
		return false
	}
	for _, r := range batch {
		if !r.records {
			return false
		}
	}
	t := &Tx{d: w.d, n: w.n, c: w.stmts, deferred: &deferred{}}
	for _, r := range batch {
		t.hooks = r.hooks[:0]
		if err := runPlain(t, r); err != nil {
			return false
		}
		r.hooks = t.hooks
	}
	if len(t.deferred.runs)+len(t.deferred.settles)+len(t.deferred.holds) == 0 {
		return false
	}
	if err := t.deferred.writeBatch(context.Background(), w.db, w.d); err != nil {
		if errors.Is(err, errFlush) {
			return false
		}
		for _, r := range batch {
			r.done <- fmt.Errorf("write batch: %w", err)
		}
		return true
	}
	for _, r := range batch {
		for _, h := range r.hooks {
			h()
		}
	}
	for _, r := range batch {
		r.done <- nil
	}
	return true
}

// commitAlone commits one write with the savepoint path.
func (w *writer) commitAlone(r *writeReq) {
	errs, broken, cause := w.try([]*writeReq{r})
	for attempt := 1; w.d.retryable != nil && attempt <= maxRetries && w.retry(errs, broken, cause); attempt++ {
		time.Sleep(time.Duration(attempt) * time.Millisecond)
		errs, broken, cause = w.try([]*writeReq{r})
	}
	if broken {
		if cause == nil {
			cause = fmt.Errorf("savepoint could not be released")
		}
		errs = []error{fmt.Errorf("write aborted its transaction: %w", cause)}
	}
	r.done <- errs[0]
}

// tryPlain runs batch in one transaction, each write without a savepoint, and
// commits it unless a write fails: then failed is that write's index, errs[failed]
// its error, and nothing was committed. err is a failure of the transaction itself
// (begin, commit, the deferred records' flush, a retryable error of a write), for
// every write of the batch. With deferring, run records are written together by
// one statement before the commit (Tx.flush).
//
// With grow, the writes queued while the transaction waited for the writers' lock
// (other replicas' transactions) join it: under contention batches grow by
// themselves, instead of more, smaller transactions queueing for the same rows.
// The batch it ran is returned.
func (w *writer) tryPlain(batch []*writeReq, deferring, grow bool) (_ []*writeReq, errs []error, failed int, err error) {
	ctx := context.Background()
	w.stmts.prepare(ctx)
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return batch, nil, -1, fmt.Errorf("begin: %w", err)
	}
	t := &Tx{tx: tx, d: w.d, n: w.n, c: w.stmts}
	if deferring {
		t.deferred = &deferred{}
	}
	if w.d.beginBatch != "" {
		if _, err := t.c.exec(ctx, tx, w.d.beginBatch); err != nil {
			tx.Rollback()
			return batch, nil, -1, fmt.Errorf("begin: %w", err)
		}
	}
	for grow && len(batch) < w.maxBatch {
		select {
		case r := <-w.queue:
			batch = append(batch, w.take(r))
			continue
		default:
		}
		break
	}
	errs = make([]error, len(batch))
	for _, r := range batch {
		r.hooks = r.hooks[:0]
	}
	for i, r := range batch {
		t.hooks = r.hooks[:0]
		if err := runPlain(t, r); err != nil {
			tx.Rollback()
			if w.d.retryable(err) || w.d.isStorage(err) {
				return batch, nil, -1, err
			}
			errs[i] = err
			return batch, errs, i, nil
		}
		r.hooks = t.hooks
	}
	if err := t.flush(ctx); err != nil {
		tx.Rollback()
		if w.d.retryable(err) || w.d.isStorage(err) {
			return batch, nil, -1, err
		}
		return batch, nil, -1, err // errFlush: rerun without deferring
	}
	t.hooks = nil
	if err := tx.Commit(); err != nil {
		tx.Rollback()
		return batch, nil, -1, fmt.Errorf("commit: %w", err)
	}
	for _, r := range batch {
		for _, h := range r.hooks {
			h()
		}
	}
	return batch, errs, -1, nil
}

// runPlain runs fn, turning a panic into its error; a store method's failure that
// fn had no way to return (Tx.fail) is the write's error too.
func runPlain(t *Tx, r *writeReq) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(needsTx); ok {
				err = errNeedsTx
				return
			}
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	t.failed, t.deferOK = nil, r.records
	if err = r.fn(t); err == nil {
		err = t.failed
	}
	return err
}

// maxRetries bounds the reruns of a batch whose transaction hit a retryable error.
const maxRetries = 5

// retry reports whether try's outcome was a retryable failure of the transaction.
func (w *writer) retry(errs []error, broken bool, cause error) bool {
	if broken {
		return w.d.retryable(cause)
	}
	for _, err := range errs {
		if err != nil && w.d.retryable(err) {
			return true
		}
	}
	return false
}

// try runs batch in one transaction and, once it has committed, the hooks of each
// write that succeeded, in batch order. broken reports that the transaction ended
// under a write, in which case nothing was committed, errs is nil and cause is the
// write's error (SQLite's reason, such as a full database).
func (w *writer) try(batch []*writeReq) (errs []error, broken bool, cause error) {
	ctx := context.Background()
	errs = make([]error, len(batch))
	for _, r := range batch {
		r.hooks = r.hooks[:0]
	}
	w.stmts.prepare(ctx) // the connection is free between transactions
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fill(errs, fmt.Errorf("begin: %w", err)), false, nil
	}
	t := &Tx{tx: tx, d: w.d, n: w.n, c: w.stmts}
	if w.d.beginBatch != "" {
		if _, err := t.c.exec(ctx, tx, w.d.beginBatch); err != nil {
			tx.Rollback()
			return fill(errs, fmt.Errorf("begin: %w", err)), false, nil
		}
	}
	for i, r := range batch {
		t.hooks = r.hooks[:0]
		errs[i], broken = runSavepoint(ctx, t, r.fn)
		if errs[i] != nil && w.d.retryable != nil && w.d.retryable(errs[i]) {
			broken = true // the locks the other writes took stay held: rerun them all
		}
		if errs[i] == nil {
			r.hooks = t.hooks
		} else {
			r.hooks = t.hooks[:0] // rolled back: its hooks never run
		}
		if broken {
			tx.Rollback()
			return nil, true, errs[i]
		}
	}
	t.hooks = nil
	if err := tx.Commit(); err != nil {
		tx.Rollback()
		return fill(errs, fmt.Errorf("commit: %w", err)), false, nil
	}
	for _, r := range batch {
		for _, h := range r.hooks {
			h()
		}
	}
	return errs, false, nil
}

func fill(errs []error, err error) []error {
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// runSavepoint runs fn in a savepoint. broken reports that the savepoint could not
// be rolled back or released, which means the transaction itself is gone: continuing
// would run later writes outside it.
func runSavepoint(ctx context.Context, t *Tx, fn func(*Tx) error) (err error, broken bool) {
	if _, err := t.c.exec(ctx, t.tx, "SAVEPOINT w"); err != nil {
		return err, true
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("write panicked: %v", p)
			}
		}()
		t.failed = nil
		err = fn(t)
		if err == nil {
			err = t.failed
		}
	}()
	if err != nil {
		if _, rerr := t.c.exec(ctx, t.tx, "ROLLBACK TO w"); rerr != nil {
			return err, true
		}
	}
	if _, rerr := t.c.exec(ctx, t.tx, "RELEASE w"); rerr != nil {
		return err, true
	}
	return err, false
}

// stmtCache keeps statements prepared on the write connection, so that the hot
// writes of a run (ledger row, rollup, charge, turn, savepoints) are parsed once
// rather than on every run: parsing was a sixth of the writer's CPU. Only the
// writer goroutine uses it. A statement first met inside a transaction runs
// unprepared there and is prepared before the next transaction begins, when the
// single write connection is free (preparing needs a connection).
type stmtCache struct {
	db      *sql.DB
	stmts   map[string]*sql.Stmt
	pending map[string]struct{}
}

// maxStmts bounds the cache; agentd's statements are a fixed set well below it.
const maxStmts = 128

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, pending: map[string]struct{}{}}
}

func (c *stmtCache) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if s := c.stmts[q]; s != nil {
		return tx.StmtContext(ctx, s).ExecContext(ctx, args...)
	}
	if len(c.stmts)+len(c.pending) < maxStmts {
		c.pending[q] = struct{}{}
	}
	return tx.ExecContext(ctx, q, args...)
}

func (c *stmtCache) prepare(ctx context.Context) {
	for q := range c.pending {
		delete(c.pending, q)
		if s, err := c.db.PrepareContext(ctx, q); err == nil {
			c.stmts[q] = s
		}
	}
}

func (c *stmtCache) close() {
	for _, s := range c.stmts {
		s.Close()
	}
}
