package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The agent refuses to start without --lb-prefix (naming the flag), with
// --accept-any-source and --lb-prefix together, and with a bad prefix;
// all before it touches the host.
func TestAgentTrustFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--vip", "198.18.0.10"}, "--lb-prefix: at least one is required"},
		{[]string{"--vip", "198.18.0.10", "--hop-prefix", "198.18.30.64/26"}, "--lb-prefix: at least one is required"},
		{[]string{"--vip", "198.18.0.10", "--lb-prefix", "198.18.30.0/27", "--accept-any-source"}, "--accept-any-source cannot be combined with --lb-prefix"},
		{[]string{"--vip", "198.18.0.10", "--lb-prefix", "198.18.30.0/33"}, "--lb-prefix"},
		{[]string{"--vip", "198.18.0.10", "--lb-prefix", "198.18.30.11/27"}, "host bits set"},
		{[]string{"--vip", "198.18.0.10", "--lb-prefix", "198.18.30.0/27", "--hop-prefix", "lb"}, "--hop-prefix"},
	} {
		cmd := newRoot()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"agent"}, tc.args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// The fastpath flags: the key file must exist, be private and hold a long
// enough key; the client role needs its backend prefixes and --lb-prefix,
// not --accept-any-source; the role's flags need --fastpath. A client host
// needs no --vip: without the egress program it then fails in New.
func TestAgentFastpathFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  0123456789abcdef0123\n", 0o600)
	short := write("short", "0123456789\n", 0o600)
	open := write("open", "0123456789abcdef0123\n", 0o644)
	lb := []string{"--lb-prefix", "198.18.30.0/27", "--listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--fastpath", "eth0", "--fastpath-backend-prefix", "198.18.50.0/24"}, "--fastpath-key-file is required"},
		{[]string{"--fastpath", "eth0", "--fastpath-key-file", short, "--fastpath-backend-prefix", "198.18.50.0/24"}, "at least 16 are required"},
		{[]string{"--fastpath", "eth0", "--fastpath-key-file", open, "--fastpath-backend-prefix", "198.18.50.0/24"}, "must not be accessible"},
		{[]string{"--fastpath", "eth0", "--fastpath-key-file", filepath.Join(dir, "none"), "--fastpath-backend-prefix", "198.18.50.0/24"}, "no such file"},
		{[]string{"--fastpath", "eth0", "--fastpath-key-file", good}, "--fastpath-backend-prefix: at least one is required"},
		{[]string{"--fastpath", "eth0", "--fastpath-key-file", good, "--fastpath-backend-prefix", "198.18.50.1/24"}, "host bits set"},
		{[]string{"--fastpath-key-file", good, "--vip", "198.18.0.10"}, "--fastpath-key-file needs --fastpath"},
		{[]string{"--fastpath-idle", "1m", "--vip", "198.18.0.10"}, "--fastpath-idle needs --fastpath"},
		{[]string{"--vip", "198.18.0.10", "--fastpath-client-prefix", "198.18.20.1/24"}, "--fastpath-client-prefix"},
		{[]string{"--listen", "127.0.0.1:0"}, "--vip: at least one VIP is required (unless --fastpath"},
		{[]string{"--fastpath", "sl-nosuch0", "--listen", "127.0.0.1:0", "--fastpath-key-file", good, "--fastpath-backend-prefix", "198.18.50.0/24"}, `attach the egress program to "sl-nosuch0"`},
	} {
		cmd := newRoot()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		args := tc.args
		if !slices.Contains(args, "--lb-prefix") {
			args = append(slices.Clone(lb), args...)
		}
		cmd.SetArgs(append([]string{"agent"}, args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	cmd := newRoot()
	cmd.SetArgs([]string{"agent", "--accept-any-source", "--fastpath", "eth0", "--fastpath-key-file", good,
		"--fastpath-backend-prefix", "198.18.50.0/24"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "cannot be combined with --accept-any-source") {
		t.Errorf("--fastpath with --accept-any-source: %v", err)
	}
}
