package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/controltest"
)

func runLBCheck(t *testing.T, path string) (string, error) {
	t.Helper()
	cmd := newLBCmd()
	cmd.SilenceErrors, cmd.SilenceUsage = true, true // as the root does
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--check", "--config", path})
	err := cmd.Execute()
	return out.String(), err
}

// The example configuration passes the check with a one-line summary, and
// nothing in the check needs an interface (eth0 does not exist here).
func TestLBCheckGood(t *testing.T) {
	path := "../../examples/lb.yaml"
	out, err := runLBCheck(t, path)
	if err != nil {
		t.Fatalf("%s: %v\n%s", path, err, out)
	}
	if !strings.HasPrefix(out, path+": OK: 4 VIP(s), 9 backend(s), interfaces eth0 (io auto), BGP with 1 peer(s); not checked: the interfaces") ||
		strings.Count(out, "\n") != 1 {
		t.Errorf("summary:\n%s", out)
	}
}

// Bad documents fail the check with every problem their "# want:" lines
// name, each prefixed with the file, and with the same problems a reload
// (the control server's PutConfig, which SIGHUP goes through) reports.
func TestLBCheckBad(t *testing.T) {
	for _, name := range []string{"backend-dup.yaml", "bgp.yaml", "empty.yaml", "maglev-not-prime.yaml", "two-documents.yaml", "unknown-vip-field.yaml", "quic-server-id-dup.yaml"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("../../internal/config/testdata/bad", name)
			doc, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			out, err := runLBCheck(t, path)
			if err == nil {
				t.Fatalf("check passed:\n%s", out)
			}
			var wants []string
			for line := range strings.SplitSeq(string(doc), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			if len(wants) == 0 {
				t.Fatal("no # want: line")
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range wants {
				found := false
				for _, l := range lines {
					found = found || strings.HasPrefix(l, path+": ") && strings.Contains(l, w)
				}
				if !found {
					t.Errorf("no line %q in:\n%v", path+": ..."+w, err)
				}
			}
			_, rerr := control.New(controltest.New()).PutConfig(context.Background(), doc)
			if rerr == nil {
				t.Fatal("a reload accepts it")
			}
			for _, l := range lines {
				if p := strings.TrimPrefix(l, path+": "); !strings.Contains(rerr.Error(), p) {
					t.Errorf("check says %q, a reload does not: %v", p, rerr)
				}
			}
		})
	}
}

func TestLBCheckMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	if _, err := runLBCheck(t, path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("missing file: %v", err)
	}
}
