package agentd_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/agentd/agentd"

// listedPackage is the part of `go list -json` output the rules need.
type listedPackage struct {
	ImportPath string
	Name       string
	Imports    []string // direct, non-test imports
	Deps       []string // transitive, non-test dependencies
}

// layers is DESIGN.md's import graph ("Layout"): for every package of the module,
// the module's packages it may import directly. Anything not listed is refused, so
// a new arrow is a decision made here, with its reason. The graph has no cycles, and
// each owner of state (auth, billing, session, agents) sits above store and below
// run and api: api reaches the store only through the owners.
var layers = map[string][]string{
	// The domain vocabulary: standard library only.
	"": {},
	// Leaves: time, the LLM contract and its adapters, tokenizers, configuration.
	"internal/clock":           {},
	"internal/clock/clocktest": {"internal/clock"},
	"internal/llm":             {},
	"internal/llm/sse":         {},
	"internal/llm/openai":      {"internal/llm", "internal/llm/sse"},
	"internal/llm/anthropic":   {"internal/llm", "internal/llm/sse"},
	"internal/llm/offline":     {"internal/llm"},
	"internal/llm/llmtest":     {"internal/llm"},
	"internal/tokens":          {},
	"internal/config":          {},
	// The only SQL.
	"internal/store": {""},
	// Test support: a database of its own per test, on each dialect.
	"internal/store/storetest": {},
	// Pure helpers of a run.
	"internal/catalog": {"", "internal/llm"},
	"internal/prompt":  {"", "internal/llm"},
	// OpenTelemetry's SDK and exporters, configured from OTEL_*; only cmd wires it.
	"internal/tracing": {},
	// Shortest edit scripts, for the version diffs (agents) and apply's plans.
	"internal/editscript": {},
	// OpenAI's JSON for tools and response formats, read into llm's types: the
	// format of the APIs (api) and of an agent's stored configuration (agents).
	"internal/toolspec": {"", "internal/llm"},
	// The owners of state, each over the store.
	"internal/auth":                {"", "internal/clock", "internal/store"},
	"internal/billing":             {"", "internal/clock", "internal/store"},
	"internal/billing/billingtest": {"", "internal/billing", "internal/clock/clocktest", "internal/store"},
	"internal/session":             {"", "internal/clock", "internal/store"},
	"internal/session/sessiontest": {"", "internal/clock/clocktest", "internal/session"},
	// agents reads its tools with toolspec and asks the model's providers (llm)
	// whether they can take them, when they are stored.
	"internal/agents": {"", "internal/catalog", "internal/clock", "internal/editscript", "internal/llm", "internal/prompt", "internal/store", "internal/toolspec"},
	// The rate limits' counters: in memory, or in Redis across replicas; no
	// database (nothing of them is durable), no other owner.
	"internal/ratelimit": {"", "internal/clock"},
	// Evals: the case format, loading, the checking of a reply and the loop over
	// cases; how a case runs is its caller's (the CLI over HTTP, run on the
	// server), so it knows neither the store nor the API.
	"internal/evals": {""},
	// One run end to end, over the owners; ratelimit admits it (tokens, slots).
	// It also runs and stores evals (evals.go): a version's cases as its runs.
	"internal/run":              {"", "internal/agents", "internal/billing", "internal/catalog", "internal/clock", "internal/evals", "internal/llm", "internal/prompt", "internal/ratelimit", "internal/session", "internal/store"},
	"internal/run/inflighttest": {"", "internal/run"},
	// A request's id, route and principal in its context, for its log lines
	// (and the access log); the API sets them, any package's log reads them.
	"internal/reqlog": {""},
	// HTTP only: the owners' services, never the store.
	"internal/api": {"", "internal/agents", "internal/auth", "internal/billing", "internal/catalog", "internal/clock", "internal/evals", "internal/llm", "internal/reqlog", "internal/run", "internal/session", "internal/toolspec"},
	// Prometheus: implements the observers run and the store's writer declare
	// (run.Observer, store.CommitObserver) and reads the store's pool stats;
	// only cmd wires it, so nothing on the run path imports Prometheus.
	"internal/metrics": {"internal/run", "internal/store"},
	// The public client and the load tool speak HTTP.
	"client":           {""},
	"internal/bench":   {"client"},
	"cmd/agentd-bench": {"internal/bench"},
	"cmd/agentd":       {"*"}, // wiring: everything but test support
}

// TestImportRules enforces the import rules of DESIGN.md ("Layout") over direct
// and transitive dependencies.
func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	byPath := map[string]*listedPackage{}
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
	}
	for _, want := range []string{module, module + "/internal/store", module + "/internal/llm", module + "/internal/api", module + "/cmd/agentd"} {
		if byPath[want] == nil {
			t.Fatalf("go list did not report %s; the rules below would check nothing", want)
		}
	}
	rel := func(p string) string { return strings.TrimPrefix(strings.TrimPrefix(p, module), "/") }
	internal := func(deps []string) []string {
		var out []string
		for _, d := range deps {
			if within(d, module) {
				out = append(out, rel(d))
			}
		}
		return out
	}
	testSupport := func(p string) bool { return strings.HasSuffix(p, "test") && strings.Contains(p, "/") }

	t.Run("every package has a place in the graph", func(t *testing.T) {
		for _, p := range pkgs {
			if _, ok := layers[rel(p.ImportPath)]; !ok {
				t.Errorf("%s is not in deps_test.go's layers: decide what it may import, and why", p.ImportPath)
			}
		}
	})
	t.Run("direct imports follow the graph", func(t *testing.T) {
		for _, p := range pkgs {
			allowed := layers[rel(p.ImportPath)]
			for _, imp := range internal(p.Imports) {
				ok := slices.Contains(allowed, imp) || (slices.Contains(allowed, "*") && !testSupport(imp))
				if !ok {
					t.Errorf("%s imports %s, which DESIGN.md's graph does not allow", p.ImportPath, imp)
				}
			}
		}
	})

	// Transitive rules: what a package may never reach, by any path.
	never := []struct {
		name string
		// bad reports whether pkg may not depend on dep. Both are relative to the
		// module when mine is true; otherwise dep is a standard or third-party path.
		bad func(pkg, dep string, mine bool) bool
	}{
		{"the root package reaches only the standard library", func(pkg, dep string, mine bool) bool {
			return pkg == "" && (mine || !isStd(dep))
		}},
		{"internal/llm and its adapters reach no other package of the module", func(pkg, dep string, mine bool) bool {
			return within(pkg, "internal/llm") && mine && !within(dep, "internal/llm")
		}},
		{"the store reaches nothing of the module but the domain vocabulary", func(pkg, dep string, mine bool) bool {
			return pkg == "internal/store" && mine && dep != ""
		}},
		{"owners of state never reach run, api or one another", func(pkg, dep string, mine bool) bool {
			owners := []string{"internal/auth", "internal/billing", "internal/session", "internal/agents"}
			if !slices.Contains(owners, pkg) {
				return false
			}
			return mine && (dep == "internal/run" || dep == "internal/api" || (slices.Contains(owners, dep) && dep != pkg))
		}},
		{"run never reaches api", func(pkg, dep string, mine bool) bool {
			return within(pkg, "internal/run") && mine && dep == "internal/api"
		}},
		{"nothing reaches a command", func(pkg, dep string, mine bool) bool { return mine && within(dep, "cmd") }},
		{"no production package reaches test support", func(pkg, dep string, mine bool) bool {
			return mine && !testSupport(pkg) && testSupport(dep)
		}},
	}
	for _, r := range never {
		t.Run(r.name, func(t *testing.T) {
			for _, p := range pkgs {
				pkg := rel(p.ImportPath)
				for _, d := range p.Deps {
					dep, mine := d, within(d, module)
					if mine {
						dep = rel(d)
					}
					if r.bad(pkg, dep, mine) {
						t.Errorf("%s depends on %s", p.ImportPath, d)
					}
				}
			}
		})
	}

	direct := []struct {
		name string
		bad  func(pkg, imp string) bool
	}{
		{"only internal/store imports database drivers", func(pkg, imp string) bool {
			return (within(imp, "modernc.org/sqlite") || imp == "database/sql/driver") && pkg != "internal/store"
		}},
		{"only internal/store imports database/sql", func(pkg, imp string) bool {
			return imp == "database/sql" && pkg != "internal/store"
		}},
		{"only cmd/agentd imports concrete providers, the offline model and the configuration", func(pkg, imp string) bool {
			concrete := slices.Contains([]string{"internal/llm/openai", "internal/llm/anthropic", "internal/llm/offline", "internal/config"}, imp)
			return concrete && pkg != "cmd/agentd"
		}},
	}
	for _, r := range direct {
		t.Run(r.name, func(t *testing.T) {
			for _, p := range pkgs {
				for _, imp := range p.Imports {
					i := imp
					if within(imp, module) {
						i = rel(imp)
					}
					if r.bad(rel(p.ImportPath), i) {
						t.Errorf("%s imports %s", p.ImportPath, imp)
					}
				}
			}
		})
	}

	t.Run("no grab-bag package names", func(t *testing.T) {
		// STYLE.md: util, common, helpers, models, types and pkg/ say nothing about
		// what a package does.
		banned := map[string]bool{"util": true, "utils": true, "common": true, "helpers": true, "helper": true, "models": true, "types": true, "pkg": true}
		for _, p := range pkgs {
			elems := strings.Split(rel(p.ImportPath), "/")
			if banned[p.Name] {
				t.Errorf("package %s is named %q", p.ImportPath, p.Name)
				continue
			}
			for _, e := range elems {
				if banned[e] {
					t.Errorf("package %s has path element %q", p.ImportPath, e)
				}
			}
		}
	})
}

// listPackages runs go list over the module that contains the test's directory.
func listPackages(t *testing.T) []*listedPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool in PATH: %v", err)
	}
	root := moduleRoot(t)
	cmd := exec.Command(goTool, "list", "-json", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -json ./... in %s: %v\n%s", root, err, stderr.Bytes())
	}
	var pkgs []*listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(listedPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// moduleRoot walks up from the working directory to the go.mod of this module.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+module+"\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of %s above the working directory", module)
		}
		dir = parent
	}
}

// isStd reports whether an import path belongs to the standard library: its first
// element has no dot (as cmd/go decides it).
func isStd(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// within reports whether imp is pkg or one of its subpackages.
func within(imp, pkg string) bool {
	return imp == pkg || strings.HasPrefix(imp, pkg+"/") && path.Clean(imp) == imp
}
