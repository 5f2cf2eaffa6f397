// Package bench measures agentd under load: a built-in OpenAI-compatible upstream
// (Upstream), the bare JSON proxy that is every table's floor (Proxy), closed- and
// open-loop load generators with log-linear latency histograms (Load, Histogram),
// CPU time and peak memory of a process read from /proc (ReadProc), and the
// scenario matrix that starts agentd as its own process and prints what it costs
// (Run, Report).
//
// cmd/agentd-bench is its command line; docs/benchmarks.md has the numbers.
package bench
