package store

import (
	"context"
	"database/sql/driver"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"
)

// Tests here synchronize on events, never on sleeps. eventGuard only turns an
// event that never comes into a failure instead of a hang.
const eventGuard = 30 * time.Second

// batchInOrder commits fns as announced writes (Expect, then Tx) in one batch, in
// this order, and returns each one's outcome. The writer is held in a write of
// the helper's own while fns are queued one after the other, so that neither the
// scheduler nor MaxWait decides the order or the batch.
func batchInOrder(t *testing.T, db *DB, fns ...func(*Tx) error) []error {
	t.Helper()
	ctx := context.Background()
	inside, gate := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- db.Tx(ctx, func(*Tx) error {
			close(inside)
			<-gate
			return nil
		})
	}()
	await(t, inside, "the writer to take the holding write")
	dones := make([]chan error, len(fns))
	for i, fn := range fns {
		// Expectation.Tx, split: announce and queue now, wait for the outcome below.
		e := db.Expect()
		e.done = true
		r := &writeReq{fn: fn, announced: true, done: make(chan error, 1)}
		if err := db.w.enqueue(r); err != nil {
			t.Fatalf("queue write %d: %v", i, err)
		}
		dones[i] = r.done
	}
	close(gate)
	if err := await(t, held, "the holding write"); err != nil {
		t.Fatalf("holding write: %v", err)
	}
	errs := make([]error, len(fns))
	for i, done := range dones {
		errs[i] = db.unavailable(await(t, done, "a queued write"))
	}
	return errs
}

// txWithin is mustTx that fails the test if the write has not returned within
// eventGuard. The tests that use it set MaxWait far beyond the guard, so only a
// writer waiting for an announced write that will never come misses it; the
// writer is then let go so that the test can end.
func txWithin(t *testing.T, db *DB, fn func(*Tx) error, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- db.Tx(context.Background(), fn) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(eventGuard):
		db.w.expected.Store(0)
		go db.Tx(context.Background(), func(*Tx) error { return nil }) // wakes the writer
		t.Fatalf("%s did not commit in %v: the writer waited for a write that will never come", what, eventGuard)
	}
}

func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventGuard):
		t.Fatalf("waited %v for %s", eventGuard, what)
		panic("unreachable")
	}
}

// interruptStatement, when set, is called by the SQL function
// test_interrupt() (which returns 0), evaluated by a statement on each row it
// considers: a test interrupts a statement that is running, not one that has yet
// to start. An error it returns ends the statement.
var interruptStatement atomic.Pointer[func() error]

func init() {
	sqlite.MustRegisterScalarFunction("test_interrupt", 0, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		if f := interruptStatement.Load(); f != nil {
			if err := (*f)(); err != nil {
				return nil, err
			}
		}
		return int64(0), nil
	})
}
