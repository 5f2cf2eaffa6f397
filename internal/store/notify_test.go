package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestNotify: a notification sent in a transaction reaches subscribers once it
// commits, never when it rolls back; NotifyNow reaches them at once. On
// PostgreSQL it reaches the other replicas too.
func TestNotify(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, Options{})
	other := db
	if onPostgres(t) {
		var err error
		if other, err = Open(ctx, dsnOf(db), Options{}); err != nil {
			t.Fatal(err)
		}
		defer other.Close()
	}
	got := make(chan string, 16)
	cancel := other.Subscribe("key", func(p string) { got <- p })
	defer cancel()
	other.Subscribe("agent", func(p string) { got <- "agent " + p })

	if err := db.Tx(ctx, func(tx *Tx) error { return tx.Notify(ctx, "key", "committed") }); err != nil {
		t.Fatal(err)
	}
	// A write that fails rolls back its savepoint, and its notification with it.
	boom := errors.New("boom")
	if err := db.Tx(ctx, func(tx *Tx) error {
		if err := tx.Notify(ctx, "key", "never"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := db.NotifyNow(ctx, "agent", "a1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"committed", "agent a1"}
	for _, w := range want {
		select {
		case p := <-got:
			if p != w {
				t.Fatalf("notification %q, want %q", p, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification %q within 10s", w)
		}
	}
	cancel()
	if err := db.NotifyNow(ctx, "key", "after-cancel"); err != nil {
		t.Fatal(err)
	}
	if err := db.NotifyNow(ctx, "agent", "a2"); err != nil {
		t.Fatal(err)
	}
	// Delivery is in order: a2 arriving first proves after-cancel was not delivered.
	if p := <-got; p != "agent a2" {
		t.Fatalf("notification %q after the subscription ended, want only %q", p, "agent a2")
	}
}

// TestPostgresListenerReconnects cuts the listening connection: subscribers are
// told that notifications may have been missed (""), and later ones arrive again.
func TestPostgresListenerReconnects(t *testing.T) {
	ctx := context.Background()
	dsn := postgresDSN(t)
	db, err := Open(ctx, dsn, Options{ApplicationName: "agentd-listen-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := make(chan string, 16)
	db.Subscribe("key", func(p string) { got <- p })
	var n int
	if err := db.read.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'agentd-listen-test' AND query LIKE 'LISTEN%'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d listeners: %v", n, err)
	}
	select {
	case p := <-got:
		if p != "" {
			t.Fatalf("first notification after the cut %q, want the missed signal", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not reconnect within 30s")
	}
	if err := db.NotifyNow(ctx, "key", "k2"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "k2" {
			t.Fatalf("notification %q, want k2", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification after reconnecting")
	}
}
