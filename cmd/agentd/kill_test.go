package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/client"
	"github.com/agentd/agentd/internal/store"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary agentdBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// agentdBinary builds this program once per test run, for tests that need it as
// a separate process (to kill it).
func agentdBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "agentd-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "agentd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// process is agentd running as a child process.
type process struct {
	cmd *exec.Cmd
	URL string
}

func startProcess(t *testing.T, bin, db, config string) *process {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agentd.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--db", "sqlite:"+db, "--config", cfg)
	cmd.Env = append(os.Environ(), "AGENTD_BOOTSTRAP_KEY="+testKey)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "agentd listening on "); ok {
			p.URL = u
			break
		}
	}
	if p.URL == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("agentd did not start: %v", sc.Err())
	}
	go io.Copy(io.Discard, out)
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// TestKillUnderLoad: agentd killed with SIGKILL while runs are in flight, then
// restarted on the same database: every run that got a 200 has its ledger row,
// its charge and its session turn; sessions hold whole turns in order; nothing is
// held; agentd check finds the database consistent.
func TestKillUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds agentd and kills it: skipped with -short")
	}
	bin := agentdBinary(t)
	db := filepath.Join(t.TempDir(), "agentd.db")
	config := "models:\n  - {id: metered, provider: offline, price: {input: 1, output: 1}}\n"
	p := startProcess(t, bin, db, config)
	ctx := context.Background()
	op := client.New(p.URL, testKey)
	if _, err := op.CreateAgent(ctx, client.AgentSpec{Name: client.Ptr("bot"), Description: client.Ptr("d"), Model: client.Ptr("metered"),
		Demonstrations: []client.Demonstration{{Input: "ping", Output: "pong"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GrantCredits(ctx, "default", 1000); err != nil {
		t.Fatal(err)
	}

	type success struct {
		session, message, runID string
	}
	var mu sync.Mutex
	var got []success
	next := map[string]int{} // each session's next turn number, across rounds
	for round := range killRounds {
		if round > 0 {
			p = startProcess(t, bin, db, config)
			op = client.New(p.URL, testKey)
			// A turn that committed without its answer reaching us is in its session:
			// continue each session's numbering after its stored turns.
			owner := ownerOf(t, op)
			s, err := store.Open(ctx, "sqlite:"+db, store.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			org, _ := s.Org(ctx, agentd.DefaultOrgName)
			agent, _ := s.AgentByName(ctx, org.ID, "bot")
			for w := range 8 {
				sid := fmt.Sprintf("w%d", w)
				n, err := s.CountTurns(ctx, agentd.SessionKey{OrgID: org.ID, AgentID: agent.ID, Owner: owner, SessionID: sid})
				if err != nil {
					t.Fatal(err)
				}
				next[sid] = n
			}
			s.Close()
		}
		// The kill comes once this round has answered killAfter runs, while the
		// workers keep sending more.
		const killAfter = 16
		var answered tally
		var wg sync.WaitGroup
		for w := range 8 {
			sid := fmt.Sprintf("w%d", w)
			mu.Lock()
			n0 := next[sid]
			mu.Unlock()
			wg.Go(func() {
				for n := n0; ; n++ {
					msg := fmt.Sprintf("%s turn %04d", sid, n)
					res, err := op.Run(ctx, "bot", msg, sid)
					mu.Lock()
					if err != nil {
						if n == n0 {
							t.Logf("round %d, %s: first run failed: %v", round, sid, err)
						}
						// The server died: this turn may or may not have committed; the
						// next round asks the database where the session stands.
						mu.Unlock()
						return
					}
					got = append(got, success{sid, msg, res.RunID})
					next[sid] = n + 1
					mu.Unlock()
					answered.add("run")
				}
			})
		}
		answered.wait(t, "run", killAfter)
		p.cmd.Process.Kill() // SIGKILL: no shutdown, no flush
		p.cmd.Wait()
		wg.Wait()
	}
	if len(got) < 10 {
		t.Fatalf("only %d runs succeeded before the kill", len(got))
	}

	// Restart on the same file: it must open, and hold nothing.
	p = startProcess(t, bin, db, config)
	op = client.New(p.URL, testKey)
	if b, err := op.Billing(ctx); err != nil || b.Held != 0 {
		t.Errorf("after restart: %+v %v", b, err)
	}
	var out strings.Builder
	if err := run(ctx, []string{"check", "--db", "sqlite:" + db}, func(string) string { return "" }, nil, &out, io.Discard); err != nil {
		t.Errorf("agentd check: %v\n%s", err, out.String())
	}

	s, err := store.Open(ctx, "sqlite:"+db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	org, err := s.Org(ctx, agentd.DefaultOrgName)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := ledgerAt(t, db)
	byRun := map[string]agentd.LedgerRow{}
	for _, r := range rows {
		byRun[r.RunID] = r
	}
	for _, g := range got {
		if r, ok := byRun[g.runID]; !ok || r.Outcome != agentd.OutcomeOK || r.Cost <= 0 {
			t.Errorf("run %s answered 200 but its ledger row is %+v (found %v)", g.runID, r, ok)
		}
	}
	agent, err := s.AgentByName(ctx, org.ID, "bot")
	if err != nil {
		t.Fatal(err)
	}
	answered := map[string]bool{}
	for _, g := range got {
		answered[g.message] = true
	}
	for w := range 8 {
		sid := fmt.Sprintf("w%d", w)
		var turns []string
		s.History(ctx, agentd.SessionKey{OrgID: org.ID, AgentID: agent.ID, Owner: ownerOf(t, op), SessionID: sid}, func(tu agentd.Turn) bool {
			turns = append([]string{tu.User}, turns...)
			return true
		})
		for n, u := range turns {
			if want := fmt.Sprintf("%s turn %04d", sid, n); u != want {
				t.Errorf("session %s turn %d is %q, want %q", sid, n, u, want)
			}
		}
		// Every answered turn is stored; at most one more per kill (committed, answer lost).
		stored := 0
		for _, u := range turns {
			if answered[u] {
				stored++
			}
		}
		want := 0
		for m := range answered {
			if strings.HasPrefix(m, sid+" ") {
				want++
			}
		}
		if stored != want || len(turns) > want+killRounds {
			t.Errorf("session %s: %d turns stored, %d answered", sid, len(turns), want)
		}
	}
	t.Logf("%d runs answered before SIGKILL; %d ledger rows after restart", len(got), len(rows))
}
