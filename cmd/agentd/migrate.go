package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/agentd/agentd/internal/store"
)

// migrate applies the migrations the database lacks and exits: the explicit step
// of an upgrade, run once before new replicas start (they would migrate too, under
// the same advisory lock, but a failed migration is better seen here than in a
// replica that will not start). A database newer than this agentd is refused.
func migrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	dsn := fs.String("db", "", "database `DSN`: sqlite:PATH or postgres://… (env AGENTD_DB)")
	if err := parseFlags(ctx, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("migrate: unexpected argument %q", fs.Arg(0))
	}
	if *dsn == "" {
		*dsn = getenv("AGENTD_DB")
	}
	if *dsn == "" {
		return fmt.Errorf("migrate: --db (or AGENTD_DB) is required: sqlite:PATH or postgres://user@host:5432/database")
	}
	before, err := store.SchemaVersionOf(ctx, *dsn)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	db, err := store.Open(ctx, *dsn, store.Options{})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	after, err := db.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if after == before {
		fmt.Fprintf(stdout, "agentd migrate: %s is at schema version %d, the newest this agentd knows\n", store.Redact(*dsn), after)
		return nil
	}
	fmt.Fprintf(stdout, "agentd migrate: %s migrated from schema version %d to %d\n", store.Redact(*dsn), before, after)
	return nil
}
