package store

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresDialect is PostgreSQL through pgx. Its writer transactions begin with
// an advisory transaction lock that every replica's writer takes (see
// DB.writerLock), so that group transactions of different replicas run one at a
// time, as SQLite's single writer does: no two of them can deadlock on the rows
// they share (an organization's balance, a day's rollup), and a rule that reads
// a value and writes what follows from it (a grant reads the balance) sees every
// write committed before it.
var postgresDialect = dialect{
	name:      "postgres",
	rebind:    rebindDollar,
	isUnique:  func(err error) bool { return pgCode(err) == "23505" },
	isStorage: pgUnavailable,
	// Serialization failures and deadlocks abort a transaction that would succeed
	// if run again; the writer reruns its batch.
	retryable:  func(err error) bool { c := pgCode(err); return c == "40001" || c == "40P01" },
	greatest:   "GREATEST",
	optimistic: true,
}

// pgCode is the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// pgUnavailable reports a failure of the database rather than of the request:
// the server is unreachable, shutting down or out of resources, the connection
// was cut, a statement ran past statement_timeout, or the database is read-only
// (a standby, or disk full and set read-only).
func pgUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var connect *pgconn.ConnectError
	if errors.As(err, &connect) {
		// Whatever the server said (too many connections, the role may not log in,
		// it is starting up), no connection means no database for this request.
		return true
	}
	switch c := pgCode(err); {
	case c == "":
	case strings.HasPrefix(c, "08"), // connection exception
		strings.HasPrefix(c, "53"),  // insufficient resources: 53100 disk full, 53300 too many connections
		strings.HasPrefix(c, "57P"), // admin or crash shutdown, cannot connect now
		c == "57014",                // statement timeout (query_canceled)
		c == "25006",                // read_only_sql_transaction
		c == "58030":                // io_error
		return true
	default:
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || pgconn.SafeToRetry(err)
}

// rebindDollar turns ? placeholders into PostgreSQL's $1, $2, … (no query of the
// store has a ? inside a string literal, but literals are skipped all the same).
// Results are cached: the store's queries are a fixed set.
func rebindDollar(q string) string {
	if v, ok := rebound.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	out := b.String()
	rebound.Store(q, out)
	return out
}

var rebound sync.Map // query with ? → query with $n

// lockKey is an advisory lock key for what within schema: replicas of one
// deployment (one schema) share it, deployments in other schemas of the same
// database do not.
func lockKey(schema, what string) int64 {
	h := fnv.New64a()
	io.WriteString(h, "agentd\x00"+schema+"\x00"+what)
	return int64(h.Sum64())
}

// openPostgres opens the PostgreSQL database of dsn: a read pool and the write
// connection the group-committing writer owns; migrations run under an advisory
// lock so that replicas starting together apply each one once.
func openPostgres(ctx context.Context, dsn string, opts Options, now func() time.Time) (_ *DB, err error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse PostgreSQL DSN: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		// A database that does not answer must fail requests with 503, not hang them.
		cfg.ConnectTimeout = 5 * time.Second
	}
	// Configured, it names the connections; else the URL's application_name does,
	// else "agentd".
	if _, set := cfg.RuntimeParams["application_name"]; !set || opts.ApplicationName != "" {
		cfg.RuntimeParams["application_name"] = cmp.Or(opts.ApplicationName, "agentd")
	}
	if opts.StatementTimeout > 0 {
		cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(max(opts.StatementTimeout.Milliseconds(), 1), 10)
	}
	if opts.ReadOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = 8
	}
	read := stdlib.OpenDB(*cfg)
	read.SetMaxOpenConns(maxConns)
	read.SetMaxIdleConns(maxConns)
	read.SetConnMaxIdleTime(5 * time.Minute)
	closeAll := []io.Closer{read}
	defer func() {
		if err != nil {
			for _, c := range closeAll {
				c.Close()
			}
		}
	}()
	var current sql.NullString
	if err := read.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	schema := current.String
	if schema == "" {
		return nil, fmt.Errorf("PostgreSQL: no schema to create tables in: search_path %q names none that exists (create it first)", cfg.RuntimeParams["search_path"])
	}
	d := postgresDialect
	d.writerLock = lockKey(schema, "writer")
	d.beginBatch = "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(d.writerLock, 10) + ")"
	n := newNotifier()
	n.pg, n.channel = true, channelOf(schema)
	db := &DB{d: d, read: read, now: now, schema: schema, n: n}
	if opts.ReadOnly {
		have, err := db.schemaVersion(ctx)
		if err != nil {
			return nil, fmt.Errorf("schema %s is not an agentd database: %w", schema, err)
		}
		if want := latestMigration(db.d); have != want {
			return nil, fmt.Errorf("schema %s has version %d and this agentd reads version %d; run agentd migrate with this version first", schema, have, want)
		}
		return db, nil
	}
	write := stdlib.OpenDB(*cfg)
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	closeAll = append(closeAll, write)
	db.write = write
	if err := db.migrate(ctx); err != nil {
		return nil, err
	}
	db.w = newWriter(write, db.d, db.n, opts.MaxBatch, opts.MaxWait)
	n.listen(cfg.Copy(), db.listening.Store)
	return db, nil
}

// lockMigrations takes the session advisory lock that serializes migrations across
// replicas on conn, and returns its release.
func (db *DB) lockMigrations(ctx context.Context, conn *sql.Conn) (func(), error) {
	if db.d.name != "postgres" {
		return func() {}, nil
	}
	// Waiting for another replica's migration, and a migration itself, may take
	// longer than the statement timeout meant for requests.
	if _, err := conn.ExecContext(ctx, `SET statement_timeout = 0`); err != nil {
		return nil, fmt.Errorf("lift the statement timeout for migrations: %w", err)
	}
	key := lockKey(db.schema, "migrate")
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	return func() {
		ctx := context.WithoutCancel(ctx)
		conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key)
		conn.ExecContext(ctx, `RESET statement_timeout`) // back to the connection's setting, for the writer
	}, nil
}
