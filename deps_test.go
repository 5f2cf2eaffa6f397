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
	"strings"
	"testing"
)

const module = "github.com/agentd/agentd"

// listedPackage is the part of `go list -json` output the rules need.
type listedPackage struct {
	ImportPath string
	Name       string
	Imports    []string // non-test imports
}

// TestImportRules enforces the import rules of DESIGN.md ("Layout"): the domain
// package is standard library only, the LLM layer stands alone, and only
// cmd/agentd wires concrete providers, drivers and configuration.
func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	byPath := map[string]*listedPackage{}
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
	}
	for _, want := range []string{module, module + "/internal/store", module + "/internal/llm", module + "/cmd/agentd"} {
		if byPath[want] == nil {
			t.Fatalf("go list did not report %s; the rules below would check nothing", want)
		}
	}

	rules := []struct {
		name string
		// bad reports whether importer may not import imp.
		bad func(importer *listedPackage, imp string) bool
	}{
		{"the root package imports only the standard library", func(p *listedPackage, imp string) bool {
			return p.ImportPath == module && !isStd(imp)
		}},
		{"internal/llm and its adapters import no other internal package", func(p *listedPackage, imp string) bool {
			return within(p.ImportPath, module+"/internal/llm") &&
				within(imp, module+"/internal") && !within(imp, module+"/internal/llm")
		}},
		{"only cmd/agentd imports concrete providers", func(p *listedPackage, imp string) bool {
			concrete := imp == module+"/internal/llm/openai" || imp == module+"/internal/llm/anthropic"
			return concrete && p.ImportPath != module+"/cmd/agentd" && !strings.HasSuffix(p.ImportPath, "_test")
		}},
		{"only internal/store imports modernc.org/sqlite", func(p *listedPackage, imp string) bool {
			return within(imp, "modernc.org/sqlite") && p.ImportPath != module+"/internal/store"
		}},
		{"only cmd/agentd imports internal/config", func(p *listedPackage, imp string) bool {
			return within(imp, module+"/internal/config") && p.ImportPath != module+"/cmd/agentd"
		}},
		{"only cmd/agentd imports internal/llm/offline", func(p *listedPackage, imp string) bool {
			return within(imp, module+"/internal/llm/offline") && p.ImportPath != module+"/cmd/agentd"
		}},
		{"internal/api does not import the database driver", func(p *listedPackage, imp string) bool {
			return within(p.ImportPath, module+"/internal/api") && (within(imp, "modernc.org/sqlite") || imp == "database/sql/driver")
		}},
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			for _, p := range pkgs {
				for _, imp := range p.Imports {
					if r.bad(p, imp) {
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
			elems := strings.Split(strings.TrimPrefix(p.ImportPath, module), "/")
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
