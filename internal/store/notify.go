package store

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notifications tell every process using the database that something changed, so
// that each can drop what it caches of it: a revoked key, an edited agent, a
// session's turns, a session lease set free. A notification is a topic and a
// payload (an id). On PostgreSQL they travel by LISTEN/NOTIFY, which delivers a
// notification sent inside a transaction only once it commits, to every replica
// (the sender included); on SQLite, whose database has one process, they are
// delivered in that process after the commit.
//
// Delivery is not guaranteed: a listener whose connection dropped misses what was
// sent meanwhile. After it reconnects, every subscriber is called with the empty
// payload, which means "anything may have changed": drop everything. Caches keep a
// short TTL besides, for what no notification reaches.

// Notify sends topic and payload to every subscriber once tx commits; nothing is
// sent if it rolls back.
func (t *Tx) Notify(ctx context.Context, topic, payload string) error {
	if t.n.pg {
		_, err := t.exec(ctx, `SELECT pg_notify(?, ?)`, t.n.channel, topic+":"+payload)
		return err
	}
	t.OnCommit(func() { t.n.dispatch(topic, payload) })
	return nil
}

// NotifyNow sends topic and payload at once, outside any transaction.
func (db *DB) NotifyNow(ctx context.Context, topic, payload string) error {
	if !db.n.pg {
		db.n.dispatch(topic, payload)
		return nil
	}
	_, err := db.read.ExecContext(ctx, `SELECT pg_notify($1, $2)`, db.n.channel, topic+":"+payload)
	return db.unavailable(err)
}

// Subscribe calls fn with the payload of every notification of topic, and with ""
// when notifications may have been missed. fn runs on the listener's goroutine (or
// the writer's, on SQLite): it must be quick and must not write. The returned
// function ends the subscription.
func (db *DB) Subscribe(topic string, fn func(payload string)) (cancel func()) {
	return db.n.subscribe(topic, fn)
}

// notifier keeps the subscriptions and, on PostgreSQL, the listening connection.
type notifier struct {
	pg      bool
	channel string // PostgreSQL channel of this schema

	mu   sync.Mutex
	subs map[string]map[*func(string)]struct{}

	stop context.CancelFunc
	done chan struct{}
}

func newNotifier() *notifier {
	return &notifier{subs: map[string]map[*func(string)]struct{}{}}
}

// channelOf is the notification channel of schema: an identifier of bounded length
// whatever the schema's name.
func channelOf(schema string) string {
	return "agentd_" + strconv.FormatUint(uint64(lockKey(schema, "notify")), 16)
}

func (n *notifier) subscribe(topic string, fn func(string)) func() {
	p := &fn
	n.mu.Lock()
	if n.subs[topic] == nil {
		n.subs[topic] = map[*func(string)]struct{}{}
	}
	n.subs[topic][p] = struct{}{}
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		delete(n.subs[topic], p)
		n.mu.Unlock()
	}
}

func (n *notifier) dispatch(topic, payload string) {
	n.mu.Lock()
	fns := make([]func(string), 0, len(n.subs[topic]))
	for p := range n.subs[topic] {
		fns = append(fns, *p)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(payload)
	}
}

// missed tells every subscriber that notifications may have been lost.
func (n *notifier) missed() {
	n.mu.Lock()
	var fns []func(string)
	for _, subs := range n.subs {
		for p := range subs {
			fns = append(fns, *p)
		}
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn("")
	}
}

// listen starts the goroutine that keeps a connection listening on the channel,
// reconnecting with backoff when it drops.
func (n *notifier) listen(cfg *pgx.ConnConfig, onState func(up bool)) {
	ctx, cancel := context.WithCancel(context.Background())
	n.stop, n.done = cancel, make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(n.done)
		backoff := 50 * time.Millisecond
		first := true
		for ctx.Err() == nil {
			err := n.session(ctx, cfg, func() {
				backoff = 50 * time.Millisecond
				if first {
					first = false
					close(ready)
				} else {
					n.missed() // what was sent while we were away is lost
				}
				onState(true)
			})
			if ctx.Err() != nil {
				return
			}
			_ = err
			onState(false)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	// Wait briefly for the first LISTEN so that a notification sent right after
	// Open is not missed; a database that does not answer is reported by Open's
	// own queries, not here.
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
	}
}

// session is one listening connection's life: connect, LISTEN, deliver until it
// fails.
func (n *notifier) session(ctx context.Context, cfg *pgx.ConnConfig, up func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		return err
	}
	up()
	for {
		msg, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		topic, payload, _ := strings.Cut(msg.Payload, ":")
		n.dispatch(topic, payload)
	}
}

func (n *notifier) close() {
	if n.stop != nil {
		n.stop()
		<-n.done
	}
}
