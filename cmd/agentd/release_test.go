package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestReleaseScript runs scripts/release.sh for one platform and checks what a
// release holds: an archive with both binaries (static, the version stamped
// in: `agentd version` says it), the license, README and changelog, and a
// SHA256SUMS line that matches the archive.
func TestReleaseScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries from scratch (a minute on a cold build cache)")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("runs the linux/amd64 binary it builds")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	dist := t.TempDir()
	cmd := exec.Command("bash", "../../scripts/release.sh")
	cmd.Env = append(os.Environ(), "VERSION=v9.9.9-test", "PLATFORMS=linux/amd64", "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}
	archive := filepath.Join(dist, "agentd-v9.9.9-test-linux-amd64.tar.gz")
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if want := hex.EncodeToString(sum[:]) + "  ./agentd-v9.9.9-test-linux-amd64.tar.gz\n"; string(sums) != want {
		t.Errorf("SHA256SUMS = %q, want %q", sums, want)
	}

	gz, err := gzip.NewReader(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	unpacked := t.TempDir()
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Base(h.Name)
		seen[name] = true
		f, err := os.OpenFile(filepath.Join(unpacked, name), os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for _, want := range []string{"agentd", "agentd-bench", "LICENSE", "README.md", "CHANGELOG.md"} {
		if !seen[want] {
			t.Errorf("the archive has no %s (has %v)", want, seen)
		}
	}
	bin := filepath.Join(unpacked, "agentd")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the release binary is dynamically linked (%v)", p.Type)
		}
	}
	f.Close()
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v9.9.9-test") {
		t.Errorf("agentd version = %q, %v; want the stamped version", out, err)
	}
}
