package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/agentd/agentd/client"
)

// usageCmd prints the organization's usage summed by day, agent, model or key, or
// streams its usage records as CSV. It goes through the HTTP API: the server owns
// the database while it runs.
func usageCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseURL := fs.String("url", "", "server URL (env AGENTD_URL; default http://127.0.0.1:8080)")
	key := fs.String("key", "", "API key with the usage scope (env AGENTD_KEY)")
	groupBy := fs.String("group-by", "day", "day, agent, model or key")
	from := fs.String("from", "", "first day (YYYY-MM-DD, UTC), RFC 3339 time or Unix seconds")
	to := fs.String("to", "", "last day (YYYY-MM-DD, UTC, included), RFC 3339 time or Unix seconds (excluded)")
	asCSV := fs.Bool("csv", false, "write every usage record as CSV instead of the summary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("usage: unexpected argument %q", fs.Arg(0))
	}
	if *baseURL == "" {
		*baseURL = getenv("AGENTD_URL")
	}
	if *baseURL == "" {
		*baseURL = "http://127.0.0.1:8080"
	}
	if *key == "" {
		*key = getenv("AGENTD_KEY")
	}
	if *key == "" {
		return fmt.Errorf("usage: an API key with the usage scope is required (--key or AGENTD_KEY)")
	}
	c := client.New(*baseURL, *key)
	if *asCSV {
		return c.UsageCSV(ctx, client.UsageFilter{From: *from, To: *to}, stdout)
	}
	sum, err := c.UsageSummary(ctx, *groupBy, *from, *to)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tRUNS\tFAILED\tINPUT TOKENS\tOUTPUT TOKENS\tTOTAL TOKENS\tCOST\tAVG LATENCY MS\n", strings.ToUpper(sum.GroupBy))
	var runs, failed, in, out int64
	var cost int64 // micro-credits, so that the total is exact
	for _, r := range sum.Data {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.6f\t%.1f\n", r.Group, r.Runs, r.Failed, r.InputTokens, r.OutputTokens,
			r.TotalTokens, r.Cost, r.AvgLatencyMS)
		runs, failed, in, out = runs+r.Runs, failed+r.Failed, in+r.InputTokens, out+r.OutputTokens
		cost += int64(math.Round(r.Cost * 1e6))
	}
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t%d\t%d.%06d\t\n", runs, failed, in, out, in+out, cost/1e6, cost%1e6)
	return tw.Flush()
}
