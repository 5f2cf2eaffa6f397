// Package storetest gives tests a database of their own on each dialect: a SQLite
// file in the test's temporary directory, and, when AGENTD_TEST_POSTGRES names a
// PostgreSQL server, a fresh schema in it that is dropped when the test ends, so
// that tests run in parallel and leave nothing behind.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvPostgres names the environment variable with the PostgreSQL DSN for tests.
const EnvPostgres = "AGENTD_TEST_POSTGRES"

// Dialects are the databases a conformance test runs on.
var Dialects = []string{"sqlite", "postgres"}

// DSN returns the DSN of a new, empty database of dialect for t, or skips t when
// dialect is postgres and AGENTD_TEST_POSTGRES is unset.
func DSN(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case "sqlite":
		return "sqlite:" + filepath.Join(t.TempDir(), "agentd.db")
	case "postgres":
		return Postgres(t)
	}
	t.Fatalf("storetest: unknown dialect %q", dialect)
	return ""
}

// Postgres creates a schema of its own for t on the server AGENTD_TEST_POSTGRES
// names and returns a DSN whose search_path is that schema; the schema is dropped
// when t ends. It skips t, saying why, when the variable is unset.
func Postgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("%s is not set: skipping the PostgreSQL test (set it to a DSN such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", EnvPostgres)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "agentd_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("storetest: connect to %s: %v", EnvPostgres, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("storetest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("storetest: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("storetest: drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("storetest: %s: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Conn is a connection to the test server as its configured (superuser) user, for
// tests that administer it: roles, terminating backends.
type Conn struct{ conn *pgx.Conn }

// Admin connects to the server AGENTD_TEST_POSTGRES names (or skips t); the
// connection closes when t ends.
func Admin(t testing.TB) *Conn {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("%s is not set: skipping the PostgreSQL test", EnvPostgres)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &Conn{conn: conn}
}

// Exec runs sql, failing t on error.
func (c *Conn) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.conn.Exec(ctx, sql); err != nil {
		t.Fatalf("storetest: %s: %v", sql, err)
	}
}

// Count runs a query that counts, failing t on error.
func (c *Conn) Count(t testing.TB, sql string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int
	if err := c.conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("storetest: %s: %v", sql, err)
	}
	return n
}

// SchemaOf is the schema a DSN from Postgres names.
func SchemaOf(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("search_path")
}

// WithUser is dsn connecting as user instead.
func WithUser(t testing.TB, dsn, user string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// CutListeners terminates the listening (LISTEN) connections of the processes that
// opened the database with store.Options{ApplicationName: app}, as a network
// failure would, and returns how many it cut. Each listener reconnects by itself
// and then tells its subscribers that notifications may have been missed ("").
func CutListeners(t testing.TB, app string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, os.Getenv(EnvPostgres))
	if err != nil {
		t.Fatalf("storetest: connect to %s: %v", EnvPostgres, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&n); err != nil {
		t.Fatalf("storetest: cut the listeners of %s: %v", app, err)
	}
	return n
}

// Notifier is the part of a store.DB that Settle uses.
type Notifier interface {
	Subscribe(topic string, fn func(payload string)) (cancel func())
	NotifyNow(ctx context.Context, topic, payload string) error
}

// Settle returns once db has delivered to its subscribers every notification
// committed before the call. Notifications arrive in commit order and are
// delivered one at a time, so once a marker sent now has arrived, every earlier
// one has reached every subscriber; the marker has a topic of its own, so that
// delivering it disturbs no one.
func Settle(t testing.TB, db Notifier) {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	marker := hex.EncodeToString(b[:])
	got := make(chan struct{}, 1)
	cancel := db.Subscribe("storetest.settle", func(p string) {
		if p == marker {
			got <- struct{}{}
		}
	})
	defer cancel()
	if err := db.NotifyNow(context.Background(), "storetest.settle", marker); err != nil {
		t.Fatalf("storetest: settle: %v", err)
	}
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("storetest: settle: the marker did not arrive within 30s")
	}
}
