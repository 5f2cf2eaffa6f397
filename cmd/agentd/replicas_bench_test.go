package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/store/storetest"
)

// benchReplicaConfig prices the offline model so that every run takes a real hold
// and pays a real charge, and turns the sweeps down to what production would run.
const benchReplicaConfig = `
models:
  - id: metered
    provider: offline
    price: {input: 1, output: 1}
`

// BenchmarkReplicas measures the run path through agentd processes, the way a
// deployment runs it: one replica on SQLite, one on PostgreSQL, and three on
// PostgreSQL with the load spread over them round-robin (all on one organization
// and one key, the case where replicas contend most). postgres-3-orgs is the
// control: three replicas, each serving an organization of its own, so that
// nothing of one replica's runs touches another's rows; what postgres-3 loses
// against it is contention, and what both lose against postgres-1 is the cost of
// three processes on the same cores. c64 is throughput with 64
// concurrent clients; c1 is one client at a time, for the latency each request
// pays (p50-µs). The load generator runs in the benchmark process on the same
// two cores as agentd and PostgreSQL.
//
//	AGENTD_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test ./cmd/agentd -run XXX -bench Replicas -benchtime 5s
func BenchmarkReplicas(b *testing.B) {
	for _, setup := range []struct {
		name     string
		replicas int
		postgres bool
		orgs     int // 1: every replica runs for one organization; else one each
	}{
		{"sqlite-1", 1, false, 1},
		{"postgres-1", 1, true, 1},
		{"postgres-3", 3, true, 1},
		{"postgres-3-orgs", 3, true, 3},
	} {
		b.Run(setup.name, func(b *testing.B) {
			dsn := "sqlite:" + filepath.Join(b.TempDir(), "agentd.db")
			if setup.postgres {
				dsn = storetest.Postgres(b)
			}
			c := startClusterOn(b, setup.replicas, benchReplicaConfig, dsn)
			ctx := context.Background()
			op := client.New(c.replicas[0].URL, testKey)
			keys := []string{testKey}
			for i := 1; i < setup.orgs; i++ {
				org, err := op.CreateOrg(ctx, fmt.Sprint("bench-", i))
				if err != nil {
					b.Fatal(err)
				}
				k, err := op.CreateKey(ctx, client.KeySpec{Name: "bench", OrgID: org.ID, Scopes: []string{"run", "agents:write"}})
				if err != nil {
					b.Fatal(err)
				}
				keys = append(keys, k.Secret)
			}
			for i, key := range keys {
				c := client.New(c.replicas[0].URL, key)
				if _, err := c.CreateAgent(ctx, client.AgentSpec{
					Name: client.Ptr("bench"), Description: client.Ptr("b"), Model: client.Ptr("metered"), MaxToken: client.Ptr(64),
					Instructions:   client.Ptr("Answer briefly."),
					Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}, {Input: "status?", Output: "all systems nominal"}},
				}); err != nil {
					b.Fatal(err)
				}
				org := "default"
				if i > 0 {
					org = fmt.Sprint("bench-", i)
				}
				if _, err := op.GrantCredits(ctx, org, 1e6); err != nil {
					b.Fatal(err)
				}
			}
			var targets []target
			for i, r := range c.replicas {
				targets = append(targets, target{url: r.URL + "/api/v3/agents/run-agents/bench/run", key: keys[i%len(keys)]})
			}
			for _, conc := range []int{64, 1} {
				b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) { benchRuns(b, targets, conc) })
			}
		})
	}
}

// target is where benchRuns sends runs, and with which key.
type target struct{ url, key string }

// benchRuns sends b.N runs from conc clients, request i to targets[i % len],
// and reports runs per second and the median latency.
func benchRuns(b *testing.B, targets []target, conc int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	lat := make([][]time.Duration, conc)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				to := targets[i%int64(len(targets))]
				req, _ := http.NewRequest("POST", to.url, strings.NewReader(`{"message":"ping"}`))
				req.Header.Set("Authorization", "Bearer "+to.key)
				resp, err := hc.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				var buf [512]byte
				for {
					if _, err := resp.Body.Read(buf[:]); err != nil {
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "runs/s")
}
