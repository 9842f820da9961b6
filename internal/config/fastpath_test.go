package config

import (
	"strings"
	"testing"
	"time"
)

const fastpathDoc = `
node:
  interfaces: [eth0]
  io: afpacket
  fastpath: {key: 0123456789abcdef}
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    fastpath: true
    fastpath_clients: [198.18.10.0/24]
    backends:
      - address: 198.18.30.11
`

func TestFastpathGood(t *testing.T) {
	c, err := Parse([]byte(fastpathDoc))
	if err != nil {
		t.Fatal(err)
	}
	f := c.Node.Fastpath
	if f.Port != 6080 || f.Idle != time.Minute || f.Max != DefaultFastpathMax {
		t.Errorf("defaults: %+v", f)
	}
	if p := c.VIPs[0].FastpathClientPrefixes(); len(p) != 1 || p[0].String() != "198.18.10.0/24" {
		t.Errorf("clients %v", p)
	}
	if r := c.Redacted(); r.Node.Fastpath.Key != Redacted || c.Node.Fastpath.Key != "0123456789abcdef" {
		t.Errorf("redaction: %q, original %q", r.Node.Fastpath.Key, c.Node.Fastpath.Key)
	}
}

func TestFastpathErrors(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"short key", "key: 0123456789abcdef", "key: short", "node.fastpath.key: must be at least 16 characters"},
		{"port", "key: 0123456789abcdef", "key: 0123456789abcdef, port: 70000", "node.fastpath.port: 70000 is not a port"},
		{"idle", "key: 0123456789abcdef", "key: 0123456789abcdef, idle: 10ms", "node.fastpath.idle: 10ms is not between 1s and 1h"},
		{"no node block", "  fastpath: {key: 0123456789abcdef}\n", "", "vips[0].fastpath: true needs node.fastpath"},
		{"ipip", "    fastpath: true\n", "    fastpath: true\n    forwarding: ipip\n", "vips[0].fastpath: true needs forwarding gue"},
		{"stateless", "    fastpath: true\n", "    fastpath: true\n    affinity: stateless\n", "is not available with affinity stateless"},
		{"no clients", "    fastpath_clients: [198.18.10.0/24]\n", "", "vips[0].fastpath_clients: must list at least one prefix"},
		{"host bits", "198.18.10.0/24", "198.18.10.1/24", "vips[0].fastpath_clients[0]: 198.18.10.1/24 must be a plain prefix"},
		{"family", "198.18.10.0/24", "2001:db8::/64", "vips[0].fastpath_clients[0]: 2001:db8::/64 differs in family"},
		{"not a prefix", "198.18.10.0/24", "clients", "vips[0].fastpath_clients[0]: clients is not a prefix"},
		{"clients without fastpath", "    fastpath: true\n", "", "vips[0].fastpath_clients: [198.18.10.0/24] is set but fastpath is not"},
	} {
		doc := strings.Replace(fastpathDoc, tc.from, tc.to, 1)
		if doc == fastpathDoc {
			t.Fatalf("%s: replacement did not apply", tc.name)
		}
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}
