// Package bpfgen checks, from a package's tests, that the eBPF object the
// package embeds is the one its C source builds.
//
// A package with an eBPF program keeps its C source in bpf/<stem>.c, a
// gen.go whose go:generate line runs bpf2go, and the generated files
// <stem>_bpfel.o and <stem>_bpfel.go, committed so that a plain go build
// needs no C compiler. `make generate` records the source's SHA-256 in
// <stem>_bpfel.sha256.
package bpfgen

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
)

// bpf2goLine is how gen.go's go:generate line starts; the rest are bpf2go's
// arguments.
const bpf2goLine = "//go:generate go run github.com/cilium/ebpf/cmd/bpf2go "

// CheckFresh fails t when the object of the program stem, in the package
// named pkg whose directory is the test's working directory, is stale: the
// source's hash must be the recorded one and, unless -short or without
// clang, rebuilding it with gen.go's bpf2go line must give the committed
// bytes of <stem>_bpfel.o and <stem>_bpfel.go.
func CheckFresh(t *testing.T, stem, pkg string) {
	t.Helper()
	srcPath := filepath.Join("bpf", stem+".c")
	src, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	rec, err := os.ReadFile(stem + "_bpfel.sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(rec)); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("%s changed since %s_bpfel.o was generated: run make generate", srcPath, stem)
	}
	if testing.Short() {
		return
	}
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("no clang: the source hash matches; not rebuilt")
	}
	gomod, err := goMod()
	if err != nil {
		t.Fatal(err)
	}
	args, err := bpf2goArgs("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bpf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, srcPath), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+pkg+"gen\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"),
		append([]string{"run", "github.com/cilium/ebpf/cmd/bpf2go"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-modfile="+gomod, "GOPACKAGE="+pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range []string{stem + "_bpfel.o", stem + "_bpfel.go"} {
		a, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s is stale: run make generate", f)
		}
	}
}

// goMod is the path of the go.mod of the module the working directory is in.
func goMod() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "go.mod")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", os.ErrNotExist
		}
		dir = up
	}
}

// bpf2goArgs are the arguments of the bpf2go go:generate line in the file
// gen.
func bpf2goArgs(gen string) ([]string, error) {
	g, err := os.ReadFile(gen)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(g), "\n") {
		if rest, ok := strings.CutPrefix(line, bpf2goLine); ok {
			return splitQuoted(rest), nil
		}
	}
	return nil, &os.PathError{Op: "find bpf2go line", Path: gen, Err: os.ErrNotExist}
}

// splitQuoted splits s at spaces outside double quotes, as go generate
// does.
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
