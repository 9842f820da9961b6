package egress

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

// TestLayout: the Go view of the program's maps matches the object.
func TestLayout(t *testing.T) {
	spec, err := loadEgress()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[egressMapSluiceEgressFlows].KeySize; got != 40 || unsafe.Sizeof(egressFlowKey{}) != 40 {
		t.Errorf("flow key: %d bytes, want 40", got)
	}
	if got := spec.Maps[egressMapSluiceEgressFlows].ValueSize; got != 56 || unsafe.Sizeof(egressFlowValue{}) != 56 {
		t.Errorf("flow value: %d bytes, want 56", got)
	}
	if got := spec.Maps[egressMapSluiceEgressCtr].MaxEntries; got != uint32(egressCtrCTR_NUM) {
		t.Errorf("counters: %d entries, want %d", got, egressCtrCTR_NUM)
	}
}

// TestEgressObjectFresh fails when the committed object is stale: its
// source's hash must be the one recorded by `make generate`, and, where
// clang is installed, rebuilding it must give the committed bytes.
func TestEgressObjectFresh(t *testing.T) {
	src, err := os.ReadFile("bpf/egress.c")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	rec, err := os.ReadFile("egress_bpfel.sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(rec)); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("bpf/egress.c changed since egress_bpfel.o was generated: run make generate")
	}
	if testing.Short() {
		return
	}
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("no clang: the source hash matches; not rebuilt")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bpf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bpf/egress.c"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module egressgen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gomod, err := filepath.Abs("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "github.com/cilium/ebpf/cmd/bpf2go"}, bpf2goArgs(t)...)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-modfile="+gomod, "GOPACKAGE=egress")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range []string{"egress_bpfel.o", "egress_bpfel.go"} {
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s is stale: run make generate", f)
		}
	}
}

// bpf2goArgs are the arguments of gen.go's go:generate line.
func bpf2goArgs(t *testing.T) []string {
	g, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(g), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate go run github.com/cilium/ebpf/cmd/bpf2go "); ok {
			return splitQuoted(rest)
		}
	}
	t.Fatal("gen.go has no bpf2go line")
	return nil
}

// splitQuoted splits s at spaces outside double quotes.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '"':
			in = !in
		case r == ' ' && !in:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
