// Command agentd stores AI agents and runs them by name over HTTP.
//
//	agentd serve [--addr ADDR] [--db sqlite:PATH] [--config FILE]
//	agentd agents|keys|orgs|credits|run|config|… (agentd --help lists them all)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		// Errors never start with "agentd:" themselves; one that does (a wrapped
		// domain error) is not given the prefix twice.
		fmt.Fprintln(os.Stderr, "agentd:", strings.TrimPrefix(err.Error(), "agentd: "))
		var ee *exitError // apply --dry-run --exit-code: 2 for a plan with changes
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

const usage = `agentd runs AI agents by name.

Usage:
  agentd serve [--addr ADDR] [--db sqlite:PATH|postgres://…] [--config FILE]
  agentd migrate --db DSN      apply the database's pending migrations and exit
  agentd demo                  start on a temporary database, create an agent, run it, exit
  agentd check --db DSN        verify balances, ledger, session turns and budgets agree
  agentd config check FILE     load and validate a configuration file as serve would

Against a running server (--url URL or AGENTD_URL, default http://localhost:8080;
--key KEY or AGENTD_KEY; --json prints the API's JSON instead of a table):
  agentd run AGENT "message" [--session ID] [--no-stream]
                               run an agent: the reply streams to stdout, usage to stderr
  agentd eval AGENT [--version N] [-f cases.yaml] [--no-demonstrations]
                               run a version's demonstrations and cases, check the replies
  agentd agents list|get|create|update|delete
                               manage agents (create, update: flags and/or --file FILE)
  agentd keys create|list|revoke|update
                               mint (the secret is printed once), list, revoke, budget keys
  agentd orgs create|list      organizations and their balances (operator keys)
  agentd credits grant ORG AMOUNT, agentd credits history ORG
                               grant credits, list the grants (operator keys)
  agentd apply -f FILE|DIR [--dry-run [--exit-code]] [--prune] [--note TEXT]
                               make the agents what agent files (YAML) say; prints the plan
  agentd export [-o DIR]       write every agent as agent files (apply's format)
  agentd usage [--group-by day|agent|model|key] [--from DAY] [--to DAY] [--csv]
                               usage summary, or every usage record as CSV

  agentd version               print the version and VCS revision (also --version)
  agentd completion bash|zsh   print a shell completion script

Run "agentd COMMAND --help" for a command's flags.

Environment: AGENTD_ADDR, AGENTD_ADMIN_ADDR, AGENTD_DB, AGENTD_CONFIG,
AGENTD_BOOTSTRAP_KEY, AGENTD_PUBLIC_URL, AGENTD_MAX_BODY_BYTES,
AGENTD_MAX_MESSAGE_CHARS, AGENTD_POSTGRES_APPLICATION_NAME.
`

// version is set at build time with -ldflags "-X main.version=..."; when it is
// not, agentd version reports the module's version from the build information.
var version string

// run is the whole program; main only supplies the process's environment, so tests
// can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, getenv, stdin, stdout, stderr)
	if errors.Is(err, errHelp) { // the usage asked for is printed
		return nil
	}
	return err
}

// dispatch runs the command args name.
func dispatch(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
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
	case "version", "--version":
		return versionCmd(ctx, &cli{getenv, stdin, stdout, stderr}, args[1:])
	case "help", "-h", "--help":
		if len(args) > 1 { // agentd help keys create: its --help
			return dispatch(ctx, append(args[1:], "--help"), getenv, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	if cmd := findCommand(args[0]); cmd != nil {
		return cmd.dispatch(ctx, &cli{getenv, stdin, stdout, stderr}, args[1:])
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
