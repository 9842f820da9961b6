package main

import (
	"bytes"
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
