package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/store"
	"github.com/agentd/agentd/internal/store/storetest"
)

// replica is one agentd serve process of a PostgreSQL deployment.
type replica struct {
	name string
	cmd  *exec.Cmd
	URL  string
	log  *syncBuffer
	done chan struct{}
}

// cluster is N replicas on one PostgreSQL schema.
type cluster struct {
	dsn      string
	replicas []*replica
}

// replicaConfig is the catalog of the replica tests: the exact model of the money
// tests (a run costs exactly its hold) and short lease and sweep periods so that a
// dead replica's reservations come back within the test.
const replicaConfig = exactConfig + `
sweep_interval: 200ms
limits:
  run_timeout: 5s
`

// startCluster starts n replicas of the built binary on a fresh schema, all at
// once (so that they migrate and bootstrap together).
func startCluster(t testing.TB, n int, config string) *cluster {
	return startClusterOn(t, n, config, "")
}

// startClusterOn is startCluster on dsn ("": a fresh PostgreSQL schema).
func startClusterOn(t testing.TB, n int, config, dsn string) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts agentd processes on PostgreSQL: skipped with -short")
	}
	if dsn == "" {
		dsn = storetest.Postgres(t)
	}
	bin := agentdBinary(t)
	c := &cluster{dsn: dsn, replicas: make([]*replica, n)}
	cfg := filepath.Join(t.TempDir(), "agentd.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { c.replicas[i], errs[i] = startReplica(bin, fmt.Sprintf("r%d", i+1), dsn, cfg) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, r := range c.replicas {
			if r != nil {
				r.kill()
			}
		}
		if t.Failed() {
			for _, r := range c.replicas {
				if r != nil {
					t.Logf("log of replica %s:\n%s", r.name, r.log)
				}
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// startReplica starts agentd serve on dsn and waits until it listens. Its
// connections are named agentd-<name> in pg_stat_activity.
func startReplica(bin, name, dsn, cfg string) (*replica, error) {
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--db", dsn, "--config", cfg)
	cmd.Env = append(os.Environ(), "AGENTD_BOOTSTRAP_KEY="+testKey, "AGENTD_POSTGRES_APPLICATION_NAME=agentd-"+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	r := &replica{name: name, cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = r.log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(r.done) }()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		fmt.Fprintln(r.log, sc.Text())
		if u, ok := strings.CutPrefix(sc.Text(), "agentd listening on "); ok {
			r.URL = u
			break
		}
	}
	if r.URL == "" {
		r.kill()
		return nil, fmt.Errorf("replica %s did not start: %v\n%s", name, sc.Err(), r.log)
	}
	go io.Copy(r.log, out)
	return r, nil
}

func (r *replica) kill() {
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// clients returns one client per replica, all with key.
func (c *cluster) clients(key string) []*client.Client {
	var out []*client.Client
	for _, r := range c.replicas {
		out = append(out, client.New(r.URL, key))
	}
	return out
}

// db opens the cluster's database read-only, beside the replicas.
func (c *cluster) db(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), c.dsn, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// check runs agentd check on the cluster's database.
func (c *cluster) check(t *testing.T) {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check", "--db", c.dsn}, func(string) string { return "" }, nil, &out, &out); err != nil {
		t.Errorf("agentd check: %v\n%s", err, out.String())
	}
}

// meteredAgent creates the agent of the money tests through op and returns one
// run's cost, measured with /estimate and checked against a real run.
func meteredAgent(t *testing.T, op *client.Client) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := op.CreateAgent(ctx, client.AgentSpec{
		Name: client.Ptr("exact"), Description: client.Ptr("d"), Model: client.Ptr("exact"), MaxToken: client.Ptr(40),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}},
	}); err != nil {
		t.Fatal(err)
	}
	var est struct {
		Hold float64 `json:"hold"`
	}
	if err := op.Do(ctx, "POST", "/api/v3/agents/run-agents/exact/estimate", nil, map[string]string{"message": "ping"}, &est); err != nil {
		t.Fatal(err)
	}
	cost := int64(est.Hold*1e6 + 0.5)
	if cost <= 0 {
		t.Fatalf("estimate %+v", est)
	}
	return cost
}

// stormAcross is stormOver with each key's runs spread over the replicas.
func stormAcross(t *testing.T, c *cluster, keys []string, n int) (ok, paid []int, limits map[string]int) {
	t.Helper()
	var clients [][]*client.Client
	for _, key := range keys {
		clients = append(clients, c.clients(key))
	}
	return stormOver(t, clients, n)
}

// secrets is mintKeys' secrets.
func secrets(t *testing.T, op *client.Client, budgets ...float64) []string {
	t.Helper()
	s, _ := mintKeys(t, op, budgets...)
	return s
}

// TestReplicasMoney: three replicas on one PostgreSQL; 200 concurrent runs from 4
// keys spread over all three, against a balance that covers 37 (and most of a
// 38th): exactly 37 succeed and the rest get 402; then nothing is held, and the
// ledger's charges are the balance's drop exactly. The same for key budgets.
func TestReplicasMoney(t *testing.T) {
	c := startCluster(t, 3, replicaConfig)
	ctx := context.Background()
	ops := c.clients(testKey)
	cost := meteredAgent(t, ops[0])

	t.Run("balance", func(t *testing.T) {
		setBalance(t, ops[1], 37*cost+cost-1)
		start, _ := ops[2].Billing(ctx)
		ok, paid, limits := stormAcross(t, c, secrets(t, ops[0], 0, 0, 0, 0), 50)
		if sum(ok) != 37 || sum(paid) != 163 || limits["balance"] != 163 {
			t.Fatalf("ok %v (%d), 402 %v (%d), limits %v; want exactly 37 successes", ok, sum(ok), paid, sum(paid), limits)
		}
		for i, op := range ops {
			end, err := op.Billing(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if end.Held != 0 || int64(end.Balance*1e6+0.5) != cost-1 {
				t.Errorf("replica %d after: %+v, want held 0 and balance %d micro-credits", i+1, end, cost-1)
			}
			if drop := int64((start.Balance-end.Balance)*1e6 + 0.5); drop != 37*cost {
				t.Errorf("replica %d: balance dropped %d, want %d", i+1, drop, 37*cost)
			}
		}
	})
	t.Run("key budgets", func(t *testing.T) {
		setBalance(t, ops[0], 1000*cost)
		budget := func(n int64) float64 { return float64(n*cost+cost-1) / 1e6 }
		ok, paid, limits := stormAcross(t, c, secrets(t, ops[2], budget(9), budget(9), budget(9), budget(10)), 50)
		if fmt.Sprint(ok) != "[9 9 9 10]" || sum(paid) != 163 || limits["key_budget"] != 163 {
			t.Fatalf("ok %v, 402 %v, limits %v", ok, paid, limits)
		}
		end, _ := ops[1].Billing(ctx)
		if end.Held != 0 || int64(end.Balance*1e6+0.5) != 1000*cost-37*cost {
			t.Errorf("after: %+v", end)
		}
	})
	db := c.db(t)
	org := mustOrg(t, db)
	totals, err := db.LedgerTotals(ctx, org.ID)
	if err != nil {
		t.Fatal(err)
	}
	if org.Balance != totals.Grants-totals.Cost {
		t.Errorf("balance %d, grants %d − ledger costs %d", org.Balance, totals.Grants, totals.Cost)
	}
	c.check(t)
}

// TestReplicasSessionTurns: 20 concurrent turns of one session, spread over three
// replicas, are serialized: 20 whole pairs, each turn having seen exactly the
// turns stored before it.
func TestReplicasSessionTurns(t *testing.T) {
	c := startCluster(t, 3, replicaConfig)
	ctx := context.Background()
	ops := c.clients(testKey)
	meteredAgent(t, ops[0])
	setBalance(t, ops[0], 1e12)
	type answer struct {
		message string
		res     *client.RunResult
	}
	answers := make(chan answer, 20)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			msg := fmt.Sprintf("ping %02d", i)
			res, err := ops[i%3].Run(ctx, "exact", msg, "shared")
			if err != nil {
				t.Errorf("turn %d: %v", i, err)
				return
			}
			answers <- answer{msg, res}
		})
	}
	wg.Wait()
	close(answers)
	seen := map[int]answer{} // history turns the run saw → its answer
	for a := range answers {
		if prev, dup := seen[a.res.Context.HistoryTurns]; dup {
			t.Errorf("%q and %q both saw %d earlier turns: the session was not serialized", prev.message, a.message, a.res.Context.HistoryTurns)
		}
		seen[a.res.Context.HistoryTurns] = a
	}
	db := c.db(t)
	org := mustOrg(t, db)
	agent, err := db.AgentByName(ctx, org.ID, "exact")
	if err != nil {
		t.Fatal(err)
	}
	var turns []agentd.Turn
	key := agentd.SessionKey{OrgID: org.ID, AgentID: agent.ID, Owner: ownerOf(t, ops[0]), SessionID: "shared"}
	if err := db.History(ctx, key, func(tu agentd.Turn) bool { turns = append([]agentd.Turn{tu}, turns...); return true }); err != nil {
		t.Fatal(err)
	}
	if len(turns) != 20 {
		t.Fatalf("%d turns stored, want 20", len(turns))
	}
	for i, tu := range turns {
		a, ok := seen[i]
		if !ok || tu.User != a.message || tu.Assistant != a.res.Response {
			t.Errorf("turn %d stored %q → %q; the run that saw %d turns sent %q and got %q", i, tu.User, tu.Assistant, i, a.message, a.res.Response)
		}
	}
	c.check(t)
}

// within polls cond until it holds or d has passed, and reports how long it took.
func within(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicasCaches: a key revoked through replica 1 is refused by replica 3,
// and an agent edited on replica 2 answers with its new version on replica 1,
// each within a second (the caches are evicted by notification).
func TestReplicasCaches(t *testing.T) {
	c := startCluster(t, 3, replicaConfig)
	ctx := context.Background()
	ops := c.clients(testKey)
	meteredAgent(t, ops[0])
	setBalance(t, ops[0], 1e12)
	k, err := ops[0].CreateKey(ctx, client.KeySpec{Name: "doomed", Scopes: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	doomed := client.New(c.replicas[2].URL, k.Secret)
	if _, err := doomed.Run(ctx, "exact", "ping", ""); err != nil { // now cached on replica 3
		t.Fatal(err)
	}
	if err := ops[0].RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	took, ok := within(time.Second, func() bool {
		_, err := doomed.Run(ctx, "exact", "ping", "")
		return statusOf(err) == http.StatusUnauthorized
	})
	if !ok {
		t.Errorf("replica 3 still accepts the key revoked on replica 1 after %v", took)
	}
	t.Logf("revocation reached replica 3 in %v", took)

	if _, err := ops[0].Run(ctx, "exact", "ping", ""); err != nil { // the agent is cached on replica 1
		t.Fatal(err)
	}
	if _, err := ops[1].UpdateAgent(ctx, "exact", client.AgentSpec{
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong, version two"}},
	}); err != nil {
		t.Fatal(err)
	}
	took, ok = within(time.Second, func() bool {
		res, err := ops[0].Run(ctx, "exact", "ping", "")
		return err == nil && res.Response == "pong, version two"
	})
	if !ok {
		t.Errorf("replica 1 still answers with the old version %v after the edit on replica 2", took)
	}
	t.Logf("the edit reached replica 1 in %v", took)
}

// outcomes collects what a load got back: run ids of the 200s, and counts of
// every status.
type outcomes struct {
	mu     sync.Mutex
	ok     []string
	status map[string]int // "replica status" → count
}

func (o *outcomes) add(replica string, status int, runID string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status == nil {
		o.status = map[string]int{}
	}
	o.status[fmt.Sprintf("%s %d", replica, status)]++
	if status == http.StatusOK {
		o.ok = append(o.ok, runID)
	}
}

func (o *outcomes) count(replica string, status int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.status[fmt.Sprintf("%s %d", replica, status)]
}

// load runs workers that each send runs on a session of their own, hopping over
// targets, until stop is closed. A request that gets no answer counts as status 0.
func load(c *cluster, targets func(worker, i int) *replica, workers int, stop <-chan struct{}, o *outcomes) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			hc := &http.Client{Timeout: 60 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := targets(w, i)
				cl := client.New(r.URL, testKey)
				cl.HTTP = hc
				res, err := cl.Run(context.Background(), "exact", fmt.Sprintf("ping %d", i), fmt.Sprint("load-", w))
				switch {
				case err == nil:
					o.add(r.name, http.StatusOK, res.RunID)
				default:
					o.add(r.name, statusOf(err), "")
				}
			}
		})
	}
	return &wg
}

// assertRecorded checks that every run answered 200 has its ledger row.
func assertRecorded(t *testing.T, db *store.DB, org string, ok []string) {
	t.Helper()
	rows, err := db.Ledger(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range rows {
		if r.Outcome == agentd.OutcomeOK {
			have[r.RunID] = true
		}
	}
	lost := 0
	for _, id := range ok {
		if !have[id] {
			lost++
		}
	}
	if lost > 0 || len(ok) == 0 {
		t.Errorf("%d of %d runs answered 200 have no ledger row", lost, len(ok))
	}
}

// TestReplicasKill: replica 2 is killed with SIGKILL under load. Replicas 1 and 3
// keep answering 200 throughout, including on sessions whose lease replica 2
// held; once its reservations expire nothing stays held; every 200 has its ledger
// row and agentd check is clean.
func TestReplicasKill(t *testing.T) {
	c := startCluster(t, 3, replicaConfig)
	ctx := context.Background()
	ops := c.clients(testKey)
	meteredAgent(t, ops[0])
	setBalance(t, ops[0], 1e12)
	var o outcomes
	dead := make(chan struct{})
	targets := func(w, i int) *replica {
		select {
		case <-dead:
			return c.replicas[[]int{0, 2}[(w+i)%2]]
		default:
			return c.replicas[(w+i)%3]
		}
	}
	stop := make(chan struct{})
	wg := load(c, targets, 12, stop, &o)
	_, started := within(time.Minute, func() bool { return o.count("r2", 200) >= 30 })
	if !started {
		t.Fatal("replica 2 answered fewer than 30 runs in a minute")
	}
	c.replicas[1].kill()
	close(dead)
	before := o.count("r1", 200) + o.count("r3", 200)
	// Long enough for the sessions replica 2 held to change hands.
	if _, ok := within(time.Minute, func() bool { return o.count("r1", 200)+o.count("r3", 200) >= before+300 }); !ok {
		t.Error("replicas 1 and 3 answered fewer than 300 runs in a minute after the kill")
	}
	close(stop)
	wg.Wait()
	for k, n := range o.status {
		if !strings.HasSuffix(k, " 200") && !strings.HasPrefix(k, "r2 ") {
			t.Errorf("%d answers %q from a live replica", n, k)
		}
	}
	// Holds and leases of replica 2 come back once they expire.
	took, ok := within(time.Minute, func() bool {
		b, err := ops[0].Billing(ctx)
		return err == nil && b.Held == 0
	})
	if !ok {
		b, _ := ops[0].Billing(ctx)
		t.Errorf("still held %v after %v: %+v", b.Held, took, b)
	}
	t.Logf("replica 2's holds came back %v after the load stopped; outcomes %v", took, o.status)
	// Nor does a lease or an in-flight mark: the live replicas' rows went with
	// their runs, and replica 2's expired with its heartbeat (the sweep deletes them).
	admin := storetest.Admin(t)
	schema := storetest.SchemaOf(t, c.dsn)
	took, ok = within(time.Minute, func() bool {
		return admin.Count(t, "SELECT count(*) FROM "+schema+".session_queue")+admin.Count(t, "SELECT count(*) FROM "+schema+".inflight") == 0
	})
	if !ok {
		t.Errorf("lease or in-flight rows left %v after the load stopped: %d, %d", took,
			admin.Count(t, "SELECT count(*) FROM "+schema+".session_queue"), admin.Count(t, "SELECT count(*) FROM "+schema+".inflight"))
	}
	db := c.db(t)
	assertRecorded(t, db, mustOrg(t, db).ID, o.ok)
	c.check(t)
}

// TestReplicasConnectionsCut: the database refuses replica 1 (its role may no
// longer log in and its connections are terminated) under load. Replica 1 answers
// 503 (never a 500, never a hang) and /readyz 503 while replica 2 keeps
// answering 200; once the role may log in again, replica 1 recovers by itself;
// every 200 of either has its ledger row.
func TestReplicasConnectionsCut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts agentd processes on PostgreSQL: skipped with -short")
	}
	// Cleanups run last first: the schema is dropped, then the role that owns it.
	admin := storetest.Admin(t)
	role := strings.ReplaceAll(strings.ToLower(agentd.NewID("agentd_cut")), "-", "_")
	admin.Exec(t, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() { admin.Exec(t, "DROP ROLE IF EXISTS "+role) })
	dsn := storetest.Postgres(t)
	admin.Exec(t, "ALTER SCHEMA "+storetest.SchemaOf(t, dsn)+" OWNER TO "+role)
	c := startClusterOn(t, 1, replicaConfig, storetest.WithUser(t, dsn, role))
	// Replica 2 connects as the server's own user: the cut does not touch it.
	c2 := startClusterOn(t, 1, replicaConfig, dsn)
	c.replicas = append(c.replicas, c2.replicas[0])
	c.replicas[1].name = "r2"
	ops := c.clients(testKey)
	meteredAgent(t, ops[0])
	setBalance(t, ops[0], 1e12)
	var o outcomes
	stop := make(chan struct{})
	wg := load(c, func(w, i int) *replica { return c.replicas[w%2] }, 8, stop, &o)
	within(time.Minute, func() bool { return o.count("r1", 200) >= 30 })
	ready := func(r *replica) int {
		resp, err := http.Get(r.URL + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	admin.Exec(t, "ALTER ROLE "+role+" NOLOGIN")
	admin.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+role+"'")
	if _, ok := within(time.Minute, func() bool { return ready(c.replicas[0]) == http.StatusServiceUnavailable && o.count("r1", 503) >= 10 }); !ok {
		t.Errorf("replica 1 cut off: readyz %d, %d answers 503", ready(c.replicas[0]), o.count("r1", 503))
	}
	// Reads too: a request that reaches the database (not the caches) is 503.
	if _, err := ops[0].Billing(context.Background()); statusOf(err) != http.StatusServiceUnavailable {
		t.Errorf("billing on replica 1 cut off: %v, want 503", err)
	}
	if _, err := ops[0].Agents(context.Background(), false); statusOf(err) != http.StatusServiceUnavailable {
		t.Errorf("agents on replica 1 cut off: %v, want 503", err)
	}
	admin.Exec(t, "ALTER ROLE "+role+" LOGIN")
	okBefore := o.count("r1", 200)
	if _, ok := within(time.Minute, func() bool { return ready(c.replicas[0]) == http.StatusOK && o.count("r1", 200) >= okBefore+30 }); !ok {
		t.Errorf("replica 1 did not recover: readyz %d, %d more 200s", ready(c.replicas[0]), o.count("r1", 200)-okBefore)
	}
	close(stop)
	wg.Wait()
	for k, n := range o.status {
		if k != "r1 200" && k != "r1 503" && k != "r2 200" {
			t.Errorf("%d answers %q", n, k)
		}
	}
	t.Logf("outcomes %v", o.status)
	db := c.db(t)
	assertRecorded(t, db, mustOrg(t, db).ID, o.ok)
	c.check(t)
}

// TestReplicasIdempotency: one Idempotency-Key sent 60 times at once, spread over
// three replicas: one run, charged once; every other answer is 409 while it is in
// flight or its stored response after, whichever replica answers.
func TestReplicasIdempotency(t *testing.T) {
	c := startCluster(t, 3, replicaConfig)
	ctx := context.Background()
	ops := c.clients(testKey)
	cost := meteredAgent(t, ops[0])
	setBalance(t, ops[0], 100*cost)
	start, _ := ops[0].Billing(ctx)
	post := func(r *replica, msg string) (int, string, http.Header) {
		req, _ := http.NewRequest("POST", r.URL+"/api/v3/agents/run-agents/exact/run", strings.NewReader(`{"message":"`+msg+`"}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Idempotency-Key", "order-42")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, "", nil
		}
		defer resp.Body.Close()
		return resp.StatusCode, readAll(resp), resp.Header
	}
	var mu sync.Mutex
	statuses := map[int]int{}
	runIDs := map[string]bool{}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			code, body, h := post(c.replicas[i%3], "ping")
			mu.Lock()
			defer mu.Unlock()
			statuses[code]++
			switch code {
			case http.StatusOK:
				runIDs[jsonField(body, "run_id")] = true
			case http.StatusConflict:
				if h.Get("Retry-After") == "" || jsonField(body, "code") != string(agentd.EConflict) {
					t.Errorf("409 without Retry-After or conflict code: %s", body)
				}
			}
		})
	}
	wg.Wait()
	if statuses[200]+statuses[409] != 60 || statuses[200] < 1 || len(runIDs) != 1 {
		t.Fatalf("statuses %v, run ids %v: want one run, the rest 409 or its replay", statuses, runIDs)
	}
	t.Logf("statuses %v", statuses)
	for _, r := range c.replicas {
		code, body, h := post(r, "ping")
		if code != 200 || h.Get("Idempotent-Replayed") != "true" || !runIDs[jsonField(body, "run_id")] {
			t.Errorf("retry on %s after the run: %d %s replayed=%q", r.name, code, body, h.Get("Idempotent-Replayed"))
		}
	}
	end, _ := ops[2].Billing(ctx)
	if drop := int64((start.Balance-end.Balance)*1e6 + 0.5); drop != cost {
		t.Errorf("the storm charged %d micro-credits, want one run's %d", drop, cost)
	}
	c.check(t)
}
