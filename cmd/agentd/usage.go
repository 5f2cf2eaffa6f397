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
	groupBy := fs.String("group-by", "day", "sum by `day|agent|model|key|version`")
	from := fs.String("from", "", "first `DAY` (YYYY-MM-DD, UTC), RFC 3339 time or Unix seconds")
	to := fs.String("to", "", "last `DAY` (YYYY-MM-DD, UTC, included), RFC 3339 time or Unix seconds (excluded)")
	asCSV := fs.Bool("csv", false, "write every usage record as CSV instead of the summary")
	f := addClientFlags(fs, "usage", true)
	if err := parseFlags(ctx, fs, args, stdout); err != nil {
		return err
	}
	if err := wantArgs(fs); err != nil {
		return err
	}
	c, err := f.client(getenv)
	if err != nil {
		return err
	}
	if *asCSV {
		return f.explain(c.UsageCSV(ctx, client.UsageFilter{From: *from, To: *to}, stdout))
	}
	sum, err := c.UsageSummary(ctx, *groupBy, *from, *to)
	if err != nil {
		return f.explain(err)
	}
	if f.json {
		return f.printJSON(stdout, "")
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tRUNS\tFAILED\tINPUT TOKENS\tOUTPUT TOKENS\tTOTAL TOKENS\tCOST\tAVG LATENCY MS\n", strings.ToUpper(sum.GroupBy))
	var runs, failed, in, out int64
	var cost int64 // micro-credits, so that the total is exact
	for _, r := range sum.Data {
		if sum.GroupBy == "version" {
			r.Group = fmt.Sprintf("%s@%d", r.Group, r.Version) // the agent as pinned
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.6f\t%.1f\n", r.Group, r.Runs, r.Failed, r.InputTokens, r.OutputTokens,
			r.TotalTokens, r.Cost, r.AvgLatencyMS)
		runs, failed, in, out = runs+r.Runs, failed+r.Failed, in+r.InputTokens, out+r.OutputTokens
		cost += int64(math.Round(r.Cost * 1e6))
	}
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t%d\t%d.%06d\t\n", runs, failed, in, out, in+out, cost/1e6, cost%1e6)
	return tw.Flush()
}
