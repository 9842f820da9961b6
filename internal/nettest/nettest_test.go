package nettest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestVeth(t *testing.T) {
	RequireRoot(t)
	a, b := New(t, "a"), New(t, "b")
	Veth(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
	a.Run(t, "ping", "-c1", "-W1", "198.18.0.2")
}

const helperEnv = "SLUICE_NETTEST_HELPER"

// TestHelperShort is run by TestShort in a child test process with -short:
// it does what the environment names.
func TestHelperShort(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("helper process of TestShort")
	case "forgot":
		New(t, "short") // a test that forgot RequireRoot
		t.Log("built a namespace under -short")
	case "guarded":
		RequireRoot(t)
		New(t, "short")
		t.Log("built a namespace under -short")
	}
}

// TestShort: with -short, a test that calls RequireRoot first skips, and
// one that reaches New without it fails instead of building a namespace.
func TestShort(t *testing.T) {
	for _, tc := range []struct {
		helper, want string
		fail         bool
	}{
		{"forgot", errShort, true},
		{"guarded", "--- SKIP: TestHelperShort", false},
	} {
		cmd := exec.Command(os.Args[0], "-test.short", "-test.v", "-test.count=1", "-test.run=^TestHelperShort$")
		cmd.Env = append(os.Environ(), helperEnv+"="+tc.helper)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.fail || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "built a namespace") {
			t.Errorf("%s: exit %v, want failed=%v and %q in:\n%s", tc.helper, err, tc.fail, tc.want, out)
		}
	}
}

func TestLookTools(t *testing.T) {
	if err := LookTools("sh"); err != nil {
		t.Errorf("sh: %v", err)
	}
	err := LookTools("sh", "no-such-tool-x1", "no-such-tool-x2")
	if err == nil || !strings.Contains(err.Error(), "no-such-tool-x1, no-such-tool-x2 not found") || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("missing tools: %v", err)
	}
}
