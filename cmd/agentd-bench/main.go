// Command agentd-bench measures agentd under load and compares it with its
// floor, a bare JSON proxy, on the same built-in upstream.
//
//	agentd-bench run [--quick] [--duration 10s] [--agentd PATH] [--json] [--only REGEX]
//	agentd-bench upstream [--addr ADDR] [--latency D] [--tokens N] [--stream-interval D] [--error-rate F] [--reset-rate F]
//	agentd-bench proxy [--addr ADDR] --upstream URL
//	agentd-bench load --url URL [--key K] [--model M] [--concurrency N] [--rate R] [--duration D] [--stream] [--body JSON|@FILE]
//	agentd-bench report [FILE]
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
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "agentd-bench:", err)
		os.Exit(1)
	}
}

const usage = `agentd-bench measures agentd (or any OpenAI-compatible gateway) under load.

Usage:
  agentd-bench run [--quick] [--duration 10s] [--warmup 2s] [--agentd PATH] [--json] [--only REGEX]
        the scenario matrix: built-in upstream, bare JSON proxy, agentd (built and
        started on a temporary SQLite database); prints the table and the targets
  agentd-bench upstream [--addr 127.0.0.1:8000] [--latency 0] [--tokens 16]
        [--stream-interval 0] [--error-rate 0] [--reset-rate 0] [--model gpt-4o-mini]
        serve the built-in OpenAI-compatible upstream (base URL http://ADDR/v1)
  agentd-bench proxy [--addr 127.0.0.1:8001] --upstream http://127.0.0.1:8000
        serve the bare JSON proxy, the floor every gateway is compared with
  agentd-bench load --url URL [--key KEY] [--model M] [--concurrency 64] [--rate 0]
        [--duration 10s] [--warmup 2s] [--stream] [--body JSON|@FILE] [--header K:V]
        [--pid PID] [--json]
        closed loop (or open loop with --rate) against any URL; --pid adds that
        process's CPU per request and peak RSS
  agentd-bench report [FILE]
        print the tables of a report saved with run --json (FILE or stdin)
`

// run is the whole program: main supplies only the process's context and output.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr)
	case "upstream":
		return upstreamCmd(ctx, args[1:], stdout, stderr)
	case "proxy":
		return proxyCmd(ctx, args[1:], stdout, stderr)
	case "load":
		return loadCmd(ctx, args[1:], stdout, stderr)
	case "report":
		return reportCmd(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
