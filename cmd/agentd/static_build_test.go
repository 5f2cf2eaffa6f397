package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestStaticBuild builds agentd as the Dockerfile does and checks that the binary
// needs nothing from the system: the image it ships in (distroless static) has
// no libc and no dynamic loader, so a dependency that brought cgo back would build
// fine and then fail to start there.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds agentd from scratch with CGO_ENABLED=0 (about a minute on a cold build cache)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the image is linux; other systems' binaries are not ELF or not static")
	}
	// go test puts its own toolchain's bin first on PATH, so this is the go that
	// runs the test.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "agentd")
	// The Dockerfile's command, less the version stamp.
	build := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build -trimpath: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("the binary has a PT_INTERP program header: it needs a dynamic loader")
		case elf.PT_DYNAMIC:
			t.Error("the binary has a PT_DYNAMIC program header: it is dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries (DT_NEEDED): %s", strings.Join(libs, ", "))
	}
	if syms, err := f.ImportedSymbols(); err == nil && len(syms) > 0 {
		t.Errorf("the binary imports %d dynamic symbols, such as %s", len(syms), syms[0].Name)
	}

	// It runs, with an empty environment as in the image.
	version := exec.Command(bin, "version")
	version.Env = []string{}
	out, err := version.CombinedOutput()
	if err != nil {
		t.Fatalf("agentd version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "agentd ") {
		t.Fatalf("agentd version printed %q, want \"agentd <version>\"", out)
	}
}
