package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/agentd/agentd/internal/billing"
	"github.com/agentd/agentd/internal/store"
)

// check verifies the database's money and memory invariants (store.DB.Check and
// billing.Check) and fails, listing the offending rows, when any does not hold. It
// opens the database read-only: it never creates, migrates or locks a file, so it
// runs beside a live server.
func check(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	dsn := fs.String("db", "", "database `DSN`: sqlite:PATH or postgres://… (env AGENTD_DB)")
	if err := parseFlags(ctx, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("check: unexpected argument %q", fs.Arg(0))
	}
	if *dsn == "" {
		*dsn = getenv("AGENTD_DB")
	}
	if *dsn == "" {
		return fmt.Errorf("check: --db sqlite:PATH or postgres://… is required")
	}
	db, err := store.Open(ctx, *dsn, store.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer db.Close()
	problems, err := db.Check(ctx)
	if err != nil {
		return err
	}
	more, err := billing.Check(ctx, db, time.Now())
	if err != nil {
		return err
	}
	problems = append(problems, more...)
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("check: %d inconsistencies in %s", len(problems), store.Redact(*dsn))
	}
	fmt.Fprintf(stdout, "agentd check: %s is consistent\n", store.Redact(*dsn))
	return nil
}
