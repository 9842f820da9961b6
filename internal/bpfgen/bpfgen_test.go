package bpfgen

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSplitQuoted(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a b  c", []string{"a", "b", "c"}},
		{`-cc clang -cflags "-O2 -g -Wall" -target bpfel x bpf/x.c`, []string{"-cc", "clang", "-cflags", "-O2 -g -Wall", "-target", "bpfel", "x", "bpf/x.c"}},
		{`"" a`, []string{"a"}},
	} {
		if got := splitQuoted(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitQuoted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBpf2goArgs(t *testing.T) {
	dir := t.TempDir()
	gen := filepath.Join(dir, "gen.go")
	os.WriteFile(gen, []byte("package x\n\n"+bpf2goLine+`-cc clang -cflags "-O2 -g" x bpf/x.c`+"\n"), 0o644)
	got, err := bpf2goArgs(gen)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"-cc", "clang", "-cflags", "-O2 -g", "x", "bpf/x.c"}; !slices.Equal(got, want) {
		t.Errorf("args %q, want %q", got, want)
	}
	os.WriteFile(gen, []byte("package x\n"), 0o644)
	if _, err := bpf2goArgs(gen); err == nil {
		t.Error("a gen.go without a bpf2go line: no error")
	}
}

func TestGoMod(t *testing.T) {
	p, err := goMod()
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := filepath.Abs("../../go.mod"); p != want {
		t.Errorf("go.mod at %s, want %s", p, want)
	}
}
