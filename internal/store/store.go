package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/agentd/agentd"
)

//go:embed migrations
var migrations embed.FS

// dialect is what differs between databases. Queries are written with ? placeholders
// and rebound for dialects that number them.
type dialect struct {
	name     string
	rebind   func(string) string
	isUnique func(error) bool
	// isStorage reports a failure of the storage itself (full, read-only, I/O,
	// unreachable): 503, no fault of the request.
	isStorage func(error) bool
	// retryable reports an error after which the writer's whole transaction is
	// rolled back and run again (nil: none is).
	retryable func(error) bool
	// greatest is the two-argument maximum function (SQLite's max, GREATEST).
	greatest string
	// beginBatch, when set, is run first in every writer transaction.
	beginBatch string
	// writerLock is the advisory lock key of beginBatch (PostgreSQL), for the
	// batches written by one function call (writer.tryBatch).
	writerLock int64
	// optimistic runs a batch's writes without a savepoint each (see
	// writer.commitOptimistic): for a server across a socket, where every
	// statement is a round trip.
	optimistic bool
}

var sqliteDialect = dialect{
	name:   "sqlite",
	rebind: func(q string) string { return q },
	isUnique: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
	},
	isStorage: func(err error) bool {
		var e *sqlite.Error
		if !errors.As(err, &e) {
			return false
		}
		switch e.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN:
			return true
		}
		return false
	},
	greatest: "max",
}

// Options tune Open.
type Options struct {
	// Synchronous is SQLite's synchronous pragma (FULL, NORMAL, EXTRA).
	Synchronous string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// MaxBatch caps the writes grouped into one transaction (256 when zero).
	MaxBatch int
	// MaxWait is how long the writer waits for more writes it expects (1ms when zero).
	MaxWait time.Duration
	// MaxBytes caps the database file (0: no cap). A write that would grow it past
	// the cap fails with 503 unavailable and writes nothing, as on a full disk; the
	// cap keeps a runaway ledger from filling the disk that other things need.
	MaxBytes int64
	// ReadOnly opens an existing database for reading only (agentd check): no lock,
	// no migrations, no writer, and a path that does not exist is an error rather
	// than a new file. It may be opened beside the process that owns the file.
	ReadOnly bool

	// PostgreSQL only.
	// MaxConns caps the read pool's connections (8 when zero); the writer has one
	// more of its own.
	MaxConns int
	// StatementTimeout bounds every statement (0: the server's setting), so that
	// a stuck database fails requests with 503 instead of hanging them.
	StatementTimeout time.Duration
	// ApplicationName names the connections in pg_stat_activity ("agentd").
	ApplicationName string
}

// pageSize is SQLite's default page size, which agentd's databases use.
const pageSize = 4096

// DB is agentd's database.
type DB struct {
	d     dialect
	file  string
	read  *sql.DB
	write *sql.DB // nil when read-only
	w     *writer // nil when read-only
	lock  *fileLock
	now   func() time.Time
	// schema is PostgreSQL's schema holding the tables; lock keys and notification
	// channels are per schema, so that deployments sharing a database stay apart.
	schema string
	n      *notifier
	// listening reports whether the PostgreSQL listener is connected.
	listening atomic.Bool
}

// Open opens the database named by dsn: "sqlite:PATH", or a PostgreSQL URL
// (postgres:// or postgresql://). Unless opts.ReadOnly, it applies the migrations
// the database lacks (on PostgreSQL under an advisory lock, so that replicas
// starting together apply each once) and refuses a schema newer than it knows.
// A SQLite file is created if needed and locked so that this process is its
// only writer (a second process is refused, naming the holder).
func Open(ctx context.Context, dsn string, opts Options) (_ *DB, err error) {
	defer wrap(&err, "store.Open(%q)", Redact(dsn))
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn, opts, now)
	}
	file, ok := strings.CutPrefix(dsn, "sqlite:")
	if !ok || file == "" {
		return nil, fmt.Errorf("unsupported database %q: want sqlite:PATH or postgres://…", Redact(dsn))
	}
	if opts.ReadOnly {
		return openReadOnly(ctx, file, now)
	}
	lock, err := lockFile(file)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.release()
		}
	}()
	sync := strings.ToUpper(opts.Synchronous)
	if sync == "" {
		sync = "FULL"
	}
	// Pragmas are per connection, so they go in the DSN that every connection uses.
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	if opts.MaxBytes > 0 {
		q.Add("_pragma", "max_page_count("+strconv.FormatInt(max(opts.MaxBytes/pageSize, 1), 10)+")")
	}
	q.Set("_txlock", "immediate")
	base := "file:" + uriPath(file) + "?" + q.Encode()

	write, err := sql.Open("sqlite", base)
	if err != nil {
		return nil, err
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)

	q.Add("_pragma", "query_only(1)")
	read, err := sql.Open("sqlite", "file:"+uriPath(file)+"?"+q.Encode())
	if err != nil {
		write.Close()
		return nil, err
	}
	read.SetMaxOpenConns(8)
	read.SetMaxIdleConns(8)
	read.SetConnMaxIdleTime(0)

	db := &DB{d: sqliteDialect, file: file, read: read, write: write, lock: lock, now: now, n: newNotifier()}
	if err := db.migrate(ctx); err != nil {
		read.Close()
		write.Close()
		return nil, err
	}
	db.w = newWriter(write, db.d, db.n, opts.MaxBatch, opts.MaxWait)
	return db, nil
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Redact is dsn with any password replaced, for messages and logs.
func Redact(dsn string) string {
	if !IsPostgres(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparseable DSN)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Dialect is the database's kind: "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.d.name }

// uriPath escapes a file path for a SQLite file: URI, whose query and fragment
// start at ? and # and whose path decodes %XX: unescaped, "a?b" would open "a".
func uriPath(file string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(file)
}

// openReadOnly opens an existing file for reading, refusing one whose schema is
// not the one this build writes (it never migrates).
func openReadOnly(ctx context.Context, file string, now func() time.Time) (*DB, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("database file %s: %w", file, err)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "query_only(1)")
	read, err := sql.Open("sqlite", "file:"+uriPath(file)+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	read.SetMaxOpenConns(4)
	db := &DB{d: sqliteDialect, file: file, read: read, now: now, n: newNotifier()}
	have, err := db.schemaVersion(ctx)
	if err != nil {
		read.Close()
		return nil, fmt.Errorf("%s is not an agentd database: %w", file, err)
	}
	if want := latestMigration(db.d); have != want {
		read.Close()
		return nil, fmt.Errorf("%s has schema version %d and this agentd reads version %d; run this version of agentd serve on it once (it migrates) and try again", file, have, want)
	}
	return db, nil
}

// Ready reports whether the database answers reads and accepts writes (the writer
// is running and its queue is not full).
func (db *DB) Ready(ctx context.Context) error {
	var one int
	if err := db.read.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: read: %w", err)
	}
	if db.w == nil {
		return errReadOnly
	}
	if !db.w.accepting() {
		return ErrQueueFull
	}
	return nil
}

// Close stops the writer after the writes already queued, closes the database and
// releases the file's lock.
func (db *DB) Close() error {
	db.n.close()
	if db.w == nil {
		return db.read.Close()
	}
	db.w.close()
	err := errors.Join(db.read.Close(), db.write.Close())
	db.lock.release()
	return err
}

// errReadOnly is returned for writes to a database opened read-only.
var errReadOnly = errors.New("store: the database was opened read-only")

// SchemaVersion is the newest migration applied to the database.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) { return db.schemaVersion(ctx) }

// SchemaVersionOf is the schema version of the database dsn names without opening
// it for writing: 0 for a database (or SQLite file) agentd never migrated.
func SchemaVersionOf(ctx context.Context, dsn string) (v int, err error) {
	defer wrap(&err, "store.SchemaVersionOf(%q)", Redact(dsn))
	var read *sql.DB
	if IsPostgres(dsn) {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return 0, fmt.Errorf("parse PostgreSQL DSN: %w", err)
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = 5 * time.Second
		}
		read = stdlib.OpenDB(*cfg)
	} else {
		file, ok := strings.CutPrefix(dsn, "sqlite:")
		if !ok || file == "" {
			return 0, fmt.Errorf("unsupported database %q: want sqlite:PATH or postgres://…", dsn)
		}
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		if read, err = sql.Open("sqlite", "file:"+uriPath(file)+"?mode=ro&_pragma=busy_timeout(10000)"); err != nil {
			return 0, err
		}
	}
	defer read.Close()
	tables := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`
	if IsPostgres(dsn) {
		tables = `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'`
	}
	var exists int
	if err := read.QueryRowContext(ctx, tables).Scan(&exists); err != nil {
		return 0, err
	}
	if exists == 0 {
		return 0, nil
	}
	err = read.QueryRowContext(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// schemaVersion is the newest migration recorded in the file.
func (db *DB) schemaVersion(ctx context.Context) (v int, err error) {
	err = db.read.QueryRowContext(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// latestMigration is the newest migration embedded for d.
func latestMigration(d dialect) int {
	entries, _ := fs.ReadDir(migrations, path.Join("migrations", d.name))
	v := 0
	for _, e := range entries {
		num, _, _ := strings.Cut(e.Name(), "_")
		if n, err := strconv.Atoi(num); err == nil {
			v = max(v, n)
		}
	}
	return v
}

// migrate applies the embedded migrations of the dialect that are not yet recorded,
// each in its own transaction.
func (db *DB) migrate(ctx context.Context) error {
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	unlock, err := db.lockMigrations(ctx, conn)
	if err != nil {
		return err
	}
	defer unlock()
	integer := "INTEGER" // SQLite's integers are 64-bit; PostgreSQL's INTEGER is not
	if db.d.name == "postgres" {
		integer = "BIGINT"
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version `+integer+` PRIMARY KEY, name TEXT NOT NULL, applied_at `+integer+` NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	dir := path.Join("migrations", db.d.name)
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return err
	}
	var have int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return err
	}
	if known := latestMigration(db.d); have > known {
		return fmt.Errorf("the database has schema version %d, newer than this agentd knows (%d): run the agentd that wrote it, or a newer one", have, known)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(name, ".sql") {
			return fmt.Errorf("migration %s: name must be NNNN_what.sql", name)
		}
		body, err := migrations.ReadFile(path.Join(dir, name))
		if err != nil {
			return err
		}
		err = txOn(ctx, conn, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, db.d.rebind(`SELECT count(*) FROM schema_migrations WHERE version = ?`), version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, db.d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				version, name, db.now().UnixMicro())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

// txOn runs fn in a transaction on conn, outside the writer. Only for use before
// the writer starts (migrations).
func txOn(ctx context.Context, conn *sql.Conn, fn func(*sql.Tx) error) (err error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			tx.Rollback()
			panic(p)
		}
		if err != nil {
			tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Tx runs fn inside the writer's next transaction, in its own savepoint: fn's writes
// commit together with other callers' writes, or roll back alone when fn fails. It
// returns after the commit that holds fn's writes, so a nil error means durable.
// fn must not keep tx after returning.
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	if db.w == nil {
		return errReadOnly
	}
	return db.unavailable(db.w.do(ctx, fn, false, false))
}

// TxRecords is Tx for a write whose statements are only RecordRun, SettleHold and
// TakeHoldLater, and which reads nothing back from them (a run's record, a run's
// hold). On PostgreSQL they are then written with the batch's other records and
// holds, by one statement or one function call for the whole batch. RecordRun then
// reports a successful run's turn as stored (it is, unless its agent is deleted
// before the commit) and SettleHold the hold as ended; the write still commits, or
// fails alone, as with Tx. fn may be run more than once. On SQLite it is Tx.
func (db *DB) TxRecords(ctx context.Context, fn func(tx *Tx) error) error {
	if db.w == nil {
		return errReadOnly
	}
	return db.unavailable(db.w.do(ctx, fn, false, true))
}

// unavailable turns a storage failure that is no fault of the request — the disk
// or database is full, the file became read-only, an I/O error — into 503
// unavailable. The write rolled back: nothing of it was kept. The cause stays in
// the error for the log; the client sees only that storage is unavailable.
func (db *DB) unavailable(err error) error {
	if err == nil || !db.d.isStorage(err) {
		return err
	}
	return &agentd.Error{Code: agentd.EUnavailable,
		Message: "storage unavailable (disk full, read-only or failing); nothing was written", Err: err}
}

// Expect tells the writer that a write is coming soon (a run took a hold), so that
// it may wait briefly for it to join the current batch instead of committing
// without it. The write is then made with the Expectation's Tx, or Cancel is called.
func (db *DB) Expect() *Expectation {
	if db.w == nil {
		return &Expectation{db: db, done: true}
	}
	db.w.expected.Add(1)
	return &Expectation{db: db}
}

// Expectation is an announced write.
type Expectation struct {
	db   *DB
	done bool
}

// Tx is DB.Tx for the announced write; the announcement ends when it is queued.
func (e *Expectation) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	if e.done {
		return e.db.Tx(ctx, fn)
	}
	e.done = true
	return e.db.unavailable(e.db.w.do(ctx, fn, true, false))
}

// TxRecords is DB.TxRecords for the announced write.
func (e *Expectation) TxRecords(ctx context.Context, fn func(tx *Tx) error) error {
	if e.done {
		return e.db.TxRecords(ctx, fn)
	}
	e.done = true
	return e.db.unavailable(e.db.w.do(ctx, fn, true, true))
}

// Cancel withdraws the announcement if it was not used; calling it again, or after
// Tx, does nothing.
func (e *Expectation) Cancel() {
	if !e.done {
		e.done = true
		e.db.w.expected.Add(-1)
	}
}

// Tx is a write transaction handed to a Tx callback.
type Tx struct {
	tx    *sql.Tx
	d     dialect
	n     *notifier
	c     *stmtCache
	hooks []func()
	// failed is the first error of a store method whose caller may have no way to
	// return it (SettleHold, inside billing's Hold.Settle): it fails the write
	// however the callback returns.
	failed error
	// deferred, when set, collects run records and hold settles for one statement
	// at the end of the batch (PostgreSQL; batch_postgres.go).
	deferred *deferred
	deferOK  bool // this write allows deferring (DB.TxRecords)
}

// fail records err as the write's own failure (see Tx.failed).
func (t *Tx) fail(err error) {
	if err != nil && t.failed == nil {
		t.failed = err
	}
}

// OnCommit registers fn to run once the transaction holding this write has
// committed, in the writer, in commit order: hooks of earlier writes (and earlier
// transactions) run first, and the caller of Tx returns only after its hooks ran.
// A write that rolls back (its own error, or the whole transaction's) runs none of
// its hooks. This is how memory that mirrors the database (balances, budgets)
// changes exactly as the database did and in the same order, even when a value
// read inside the transaction is absolute. fn must be quick and must not write.
func (t *Tx) OnCommit(fn func()) { t.hooks = append(t.hooks, fn) }

// Statements of a queued write ignore the caller's cancellation: interrupting one
// mid-statement can abort the whole group's transaction, and a write once queued
// is meant to happen (its caller waits for the outcome either way).
func (t *Tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	t.needTx()
	return t.c.exec(context.WithoutCancel(ctx), t.tx, t.d.rebind(q), args...)
}

// needTx leaves a write that runs a statement while its batch is tried without a
// transaction (writer.tryBatch); the batch then runs in one.
func (t *Tx) needTx() {
	if t.tx == nil {
		panic(needsTx{})
	}
}

func (t *Tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	t.needTx()
	return t.tx.QueryRowContext(context.WithoutCancel(ctx), t.d.rebind(q), args...)
}

func (t *Tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	t.needTx()
	return t.tx.QueryContext(context.WithoutCancel(ctx), t.d.rebind(q), args...)
}

func (db *DB) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, db.d.rebind(q), args...)
}

func (db *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return db.read.QueryContext(ctx, db.d.rebind(q), args...)
}

// wrap annotates a non-nil *err with the operation, keeping *agentd.Error values
// reachable through errors.As.
//
// A failure of the database itself (unreachable, cut off, out of resources) is
// no fault of the request, read or write: it becomes 503 unavailable, with the
// cause kept for the log.
func wrap(err *error, format string, args ...any) {
	if *err == nil {
		return
	}
	cause := *err
	*err = fmt.Errorf(format+": %w", append(args, cause)...)
	var ae *agentd.Error
	if !errors.As(cause, &ae) && (sqliteDialect.isStorage(cause) || postgresDialect.isStorage(cause)) {
		*err = &agentd.Error{Code: agentd.EUnavailable, Message: "the database is unavailable; retry shortly", Err: *err}
	}
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}
