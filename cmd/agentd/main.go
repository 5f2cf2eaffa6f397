// Command agentd stores AI agents and runs them by name over HTTP.
//
//	agentd serve [--addr ADDR] [--db sqlite:PATH] [--config FILE]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "agentd:", err)
		os.Exit(1)
	}
}

const usage = `agentd runs AI agents by name.

Usage:
  agentd serve [--addr ADDR] [--db sqlite:PATH|postgres://…] [--config FILE]
  agentd migrate --db DSN      apply the database's pending migrations and exit
  agentd demo                  start on a temporary database, create an agent, run it, exit
  agentd check --db DSN        verify balances, ledger, session turns and budgets agree
  agentd usage [--group-by day|agent|model|key] [--from DAY] [--to DAY] [--csv]
                               usage summary (or every usage record as CSV) from a
                               running server; --url/AGENTD_URL, --key/AGENTD_KEY
  agentd version

Environment: AGENTD_ADDR, AGENTD_ADMIN_ADDR, AGENTD_DB, AGENTD_CONFIG,
AGENTD_BOOTSTRAP_KEY, AGENTD_PUBLIC_URL, AGENTD_MAX_BODY_BYTES,
AGENTD_MAX_MESSAGE_CHARS, AGENTD_POSTGRES_APPLICATION_NAME.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole program; main only supplies the process's environment, so tests
// can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr, nil)
	case "demo":
		return demo(ctx, args[1:], getenv, stdout, stderr)
	case "check":
		return check(ctx, args[1:], getenv, stdout, stderr)
	case "migrate":
		return migrate(ctx, args[1:], getenv, stdout, stderr)
	case "usage":
		return usageCmd(ctx, args[1:], getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "agentd", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
