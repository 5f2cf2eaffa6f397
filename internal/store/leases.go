package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sync"
	"time"

	"github.com/agentd/agentd"
)

// Replica is this process among the replicas sharing one PostgreSQL database, as
// the holder of the reservations they must agree on: session turn leases (a queue
// of tickets per session, session.DBLeases) and Idempotency-Keys in flight (one
// unique row each, run.DBInFlight). Every such row names its replica and carries
// an expiry. While the run a row stands for lives, the replica's heartbeat pushes
// the expiry forward, all of its rows in one statement per tick; a replica that
// dies (crash, kill, partition) stops renewing, and its rows count as gone once
// TTL has passed, however long its runs were allowed to take. A row whose expiry
// has passed is dead for good: the heartbeat does not bring it back and the sweep
// deletes it.
//
// Every operation is one short autocommit statement on the read pool: nothing
// holds a connection while a run waits for its model, and the writer's group
// transactions are not involved. Times are the caller's (the now arguments and
// ReplicaOptions.Now, one clock), so that tests decide expiry with a fake clock;
// the replicas' clocks must agree to well within TTL.
type Replica struct {
	db     *DB
	id     string
	ttl    time.Duration
	now    func() time.Time
	onBeat func(error)
	class  int32 // advisory lock class of this schema's lease keys

	mu      sync.Mutex
	closed  bool
	tickets map[int64]struct{} // lease tickets to renew
	marks   map[string]string  // in-flight marks to renew: encoded id → token

	ctx  context.Context // cancelled by Close, stopping a heartbeat mid-statement
	stop context.CancelFunc
	done chan struct{} // closed when the heartbeat has returned
}

// DefaultReplicaTTL is ReplicaOptions.TTL when zero: a dead replica's leases and
// marks are free 5 s after its last heartbeat.
const DefaultReplicaTTL = 5 * time.Second

// ReplicaOptions tune NewReplica.
type ReplicaOptions struct {
	// ID names the replica in its rows (the host name and a random id when "");
	// it must differ between live replicas.
	ID string
	// TTL is how long a row outlives its last renewal (DefaultReplicaTTL when 0).
	TTL time.Duration
	// Every is the heartbeat's period (TTL×3/10 when 0: three tries before a row
	// expires). Below zero no heartbeat runs, and the caller calls Beat and Sweep
	// itself (tests that move a fake clock).
	Every time.Duration
	// Now is the clock of expiries (time.Now when nil). Callers of the methods
	// taking now must pass the same clock's time.
	Now func() time.Time
	// OnBeat, when set, is called after each heartbeat with its error (nil: the
	// rows were renewed); it runs on the heartbeat's goroutine and must be quick.
	// A replica whose beats fail for TTL has lost its leases to other replicas.
	OnBeat func(error)
}

// sweepBatch bounds the rows one sweep statement deletes.
const sweepBatch = 1000

var errReplicaClosed = &agentd.Error{Code: agentd.EUnavailable, Message: "the server is shutting down"}

// NewReplica registers this process as a replica of db and starts its heartbeat
// (unless o.Every < 0). It needs PostgreSQL: on SQLite one process owns the file
// and keeps leases in memory. Close it after the server has drained its runs,
// before db.
func (db *DB) NewReplica(o ReplicaOptions) (*Replica, error) {
	if db.d.name != "postgres" {
		return nil, errors.New("store: replicas share leases through PostgreSQL; on SQLite one process owns the database and keeps them in memory")
	}
	if db.w == nil {
		return nil, errReadOnly
	}
	if o.TTL <= 0 {
		o.TTL = DefaultReplicaTTL
	}
	if o.Every == 0 {
		o.Every = o.TTL * 3 / 10
	}
	if o.Every >= o.TTL {
		return nil, fmt.Errorf("store: a heartbeat every %s cannot keep rows alive for %s; beat more often than the TTL", o.Every, o.TTL)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ID == "" {
		o.ID = agentd.NewID("replica")
		if host, err := os.Hostname(); err == nil && host != "" {
			o.ID = host + "/" + o.ID
		}
	}
	h := fnv.New32a()
	io.WriteString(h, "agentd\x00"+db.schema+"\x00lease")
	r := &Replica{db: db, id: o.ID, ttl: o.TTL, now: o.Now, onBeat: o.OnBeat, class: int32(h.Sum32()),
		tickets: map[int64]struct{}{}, marks: map[string]string{}, done: make(chan struct{})}
	r.ctx, r.stop = context.WithCancel(context.Background())
	if o.Every < 0 {
		close(r.done)
	} else {
		go r.heartbeat(o.Every)
	}
	return r, nil
}

// ID is the replica's name in its rows.
func (r *Replica) ID() string { return r.id }

// Tracked returns how many tickets and in-flight marks the replica renews now:
// those of the turns and runs in flight here.
func (r *Replica) Tracked() (tickets, marks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tickets), len(r.marks)
}

// heartbeat renews the replica's rows every period and sweeps expired rows (of
// any replica) about once per TTL, until Close.
func (r *Replica) heartbeat(every time.Duration) {
	defer close(r.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		// A beat slower than this is too late to keep anything alive; give up and
		// try again on the next tick.
		ctx, cancel := context.WithTimeout(r.ctx, max(r.ttl-every, every))
		err := r.Beat(ctx)
		if time.Since(lastSweep) >= r.ttl {
			lastSweep = time.Now()
			_, serr := r.Sweep(ctx)
			err = errors.Join(err, serr)
		}
		cancel()
		if r.onBeat != nil && r.ctx.Err() == nil {
			r.onBeat(err)
		}
	}
}

// Beat renews every ticket and mark of the replica that has not expired, in one
// statement; with none, it does nothing.
func (r *Replica) Beat(ctx context.Context) (err error) {
	defer wrap(&err, "store.Replica.Beat")
	r.mu.Lock()
	tickets := make([]int64, 0, len(r.tickets))
	for t := range r.tickets {
		tickets = append(tickets, t)
	}
	ids := make([]string, 0, len(r.marks))
	tokens := make([]string, 0, len(r.marks))
	for id, token := range r.marks {
		ids, tokens = append(ids, id), append(tokens, token)
	}
	r.mu.Unlock()
	if len(tickets) == 0 && len(ids) == 0 {
		return nil
	}
	now := r.now()
	exp, at := micros(now.Add(r.ttl)), micros(now)
	// Renewing the ones we know of, rather than all rows naming this replica, lets
	// a row we lost track of (its insert's answer or its delete failed) expire.
	_, err = r.db.read.ExecContext(ctx, r.db.d.rebind(`WITH q AS (
			UPDATE session_queue SET expires_at = ? WHERE ticket = ANY(?) AND expires_at > ?)
		UPDATE inflight SET expires_at = ? WHERE id = ANY(?) AND token = ANY(?) AND expires_at > ?`),
		exp, tickets, at, exp, ids, tokens, at)
	return r.db.unavailable(err)
}

// Sweep deletes expired tickets and marks, of every replica, in batches until none
// is left; it returns how many it deleted. Expired rows are ignored by every
// check already: sweeping only keeps the tables small. Replicas sweeping at once
// skip each other's rows.
func (r *Replica) Sweep(ctx context.Context) (n int, err error) {
	defer wrap(&err, "store.Replica.Sweep")
	at := micros(r.now())
	for _, q := range []string{
		`DELETE FROM session_queue WHERE ticket IN (
			SELECT ticket FROM session_queue WHERE expires_at <= ? LIMIT ? FOR UPDATE SKIP LOCKED)`,
		`DELETE FROM inflight WHERE id IN (
			SELECT id FROM inflight WHERE expires_at <= ? LIMIT ? FOR UPDATE SKIP LOCKED)`,
	} {
		for {
			res, err := r.db.read.ExecContext(ctx, r.db.d.rebind(q), at, sweepBatch)
			if err != nil {
				return n, r.db.unavailable(err)
			}
			c, _ := res.RowsAffected()
			n += int(c)
			if c < sweepBatch {
				break
			}
		}
	}
	return n, nil
}

// Close stops the heartbeat and deletes the replica's rows, freeing at once the
// leases and marks of runs still in flight: call it once the server has drained.
func (r *Replica) Close(ctx context.Context) (err error) {
	defer wrap(&err, "store.Replica.Close")
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	clear(r.tickets)
	clear(r.marks)
	r.mu.Unlock()
	r.stop()
	<-r.done
	_, err = r.db.read.ExecContext(ctx, r.db.d.rebind(`WITH q AS (DELETE FROM session_queue WHERE replica = ?)
		DELETE FROM inflight WHERE replica = ?`), r.id, r.id)
	return r.db.unavailable(err)
}

// track starts renewing a ticket or mark (add puts it in its map), unless the
// replica was closed.
func (r *Replica) track(add func()) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errReplicaClosed
	}
	add()
	return nil
}

func (r *Replica) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// encodeKey is a caller's key as stored: callers' keys join their parts with NUL
// bytes, which PostgreSQL's TEXT cannot hold.
func encodeKey(k string) string { return base64.RawURLEncoding.EncodeToString([]byte(k)) }

// leaseTopic is the notification of a lease set free; its payload is the
// encoded key.
const leaseTopic = "lease"

// EnqueueLease queues a ticket for the lease of key and returns it. Tickets of a
// key are numbered in arrival order, and every smaller ticket of the key is
// committed before a larger one exists, so that LeaseHead run after it sees all
// who came first. The ticket expires TTL after now unless renewed; it must be
// ended with DequeueLease.
func (r *Replica) EnqueueLease(ctx context.Context, key string, now time.Time) (ticket int64, err error) {
	defer wrap(&err, "store.EnqueueLease")
	if r.isClosed() {
		return 0, errReplicaClosed
	}
	k := encodeKey(key)
	h := fnv.New32a()
	io.WriteString(h, k)
	// The advisory lock is taken before the identity is drawn and held until the
	// statement commits: without it a larger ticket could commit first, and its
	// LeaseHead would not see the smaller one still in flight.
	err = r.db.read.QueryRowContext(ctx, r.db.d.rebind(`INSERT INTO session_queue (lease_key, replica, expires_at)
		SELECT ?::text, ?::text, ?::bigint FROM (SELECT pg_advisory_xact_lock(?::int4, ?::int4)) AS arrival
		RETURNING ticket`), k, r.id, micros(now.Add(r.ttl)), r.class, int32(h.Sum32())).Scan(&ticket)
	if err != nil {
		return 0, r.db.unavailable(err)
	}
	if err := r.track(func() { r.tickets[ticket] = struct{}{} }); err != nil {
		r.DequeueLease(context.WithoutCancel(ctx), ticket)
		return 0, err
	}
	return ticket, nil
}

// LeaseHead renews ticket and reports whether it holds key's lease: whether no
// smaller ticket of key is alive at now. alive is false when ticket itself has
// expired (or is gone): others may have passed it, so it can never hold; its
// owner dequeues it and queues again.
func (r *Replica) LeaseHead(ctx context.Context, key string, ticket int64, now time.Time) (head, alive bool, err error) {
	defer wrap(&err, "store.LeaseHead")
	at := micros(now)
	err = r.db.read.QueryRowContext(ctx, r.db.d.rebind(`WITH me AS (
			UPDATE session_queue SET expires_at = ? WHERE ticket = ? AND expires_at > ? RETURNING ticket)
		SELECT EXISTS (SELECT 1 FROM me),
			NOT EXISTS (SELECT 1 FROM session_queue WHERE lease_key = ? AND ticket < ? AND expires_at > ?)`),
		micros(now.Add(r.ttl)), ticket, at, encodeKey(key), ticket, at).Scan(&alive, &head)
	if err != nil {
		return false, false, r.db.unavailable(err)
	}
	return head && alive, alive, nil
}

// DequeueLease deletes ticket, the end of a lease or of a wait for one, and
// notifies the replicas when tickets queue behind it. It stops renewing the
// ticket first, so that a ticket it fails to delete expires within TTL. It is
// bounded by TTL, whatever ctx.
func (r *Replica) DequeueLease(ctx context.Context, ticket int64) (err error) {
	defer wrap(&err, "store.DequeueLease")
	r.mu.Lock()
	delete(r.tickets, ticket)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	// The notification goes out on commit, only when someone waits: most turns
	// find their session free, and a waiter the check misses (queued during
	// this statement) finds the ticket gone on its next poll.
	_, err = r.db.read.ExecContext(ctx, r.db.d.rebind(`WITH gone AS (
			DELETE FROM session_queue WHERE ticket = ? RETURNING lease_key, ticket)
		SELECT pg_notify(?, ?::text || gone.lease_key) FROM gone
		WHERE EXISTS (SELECT 1 FROM session_queue q WHERE q.lease_key = gone.lease_key AND q.ticket > gone.ticket)`),
		ticket, r.db.n.channel, leaseTopic+":")
	return r.db.unavailable(err)
}

// SubscribeLeases calls fn with the key of every lease set free while tickets
// wait behind it, on any replica, and with "" when notifications may have been
// missed (see DB.Subscribe). fn must be quick.
func (r *Replica) SubscribeLeases(fn func(key string)) (cancel func()) {
	return r.db.Subscribe(leaseTopic, func(payload string) {
		if payload == "" {
			fn("")
			return
		}
		if k, err := base64.RawURLEncoding.DecodeString(payload); err == nil {
			fn(string(k))
		}
	})
}

// BeginInFlight marks id in flight until TTL after now (renewed by the
// heartbeat), taking over a mark that has expired. ok is false when a live mark
// exists. The returned token ends this mark and no later one.
func (r *Replica) BeginInFlight(ctx context.Context, id string, now time.Time) (token string, ok bool, err error) {
	defer wrap(&err, "store.BeginInFlight")
	if r.isClosed() {
		return "", false, errReplicaClosed
	}
	k, token := encodeKey(id), agentd.NewID("mark")
	res, err := r.db.read.ExecContext(ctx, r.db.d.rebind(`INSERT INTO inflight (id, token, replica, expires_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token, replica = EXCLUDED.replica, expires_at = EXCLUDED.expires_at
		WHERE inflight.expires_at <= ?`), k, token, r.id, micros(now.Add(r.ttl)), micros(now))
	if err != nil {
		return "", false, r.db.unavailable(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return "", false, err
	} else if n == 0 {
		return "", false, nil
	}
	if err := r.track(func() { r.marks[k] = token }); err != nil {
		r.EndInFlight(context.WithoutCancel(ctx), id, token)
		return "", false, err
	}
	return token, true, nil
}

// EndInFlight deletes the mark of id that token began, if it is still there. Like
// DequeueLease it stops renewing first and is bounded by TTL.
func (r *Replica) EndInFlight(ctx context.Context, id, token string) (err error) {
	defer wrap(&err, "store.EndInFlight")
	k := encodeKey(id)
	r.mu.Lock()
	if r.marks[k] == token {
		delete(r.marks, k)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	_, err = r.db.read.ExecContext(ctx, r.db.d.rebind(`DELETE FROM inflight WHERE id = ? AND token = ?`), k, token)
	return r.db.unavailable(err)
}
