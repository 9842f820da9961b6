package config

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// restartChanges changes one Node field to another valid value, per YAML
// name. A Node field added without an entry here and in RestartRules fails
// TestRestartRulesExhaustive.
var restartChanges = map[string]func(n *Node){
	"interfaces":    func(n *Node) { n.Interfaces = append(n.Interfaces, "eth9") },
	"io":            func(n *Node) { n.IO = "afpacket" },
	"xdp_mode":      func(n *Node) { n.XDPMode = "generic" },
	"offload":       func(n *Node) { n.Offload = "auto" },
	"workers":       func(n *Node) { n.Workers++ },
	"gue_port":      func(n *Node) { n.GUEPort = 6081 },
	"seed":          func(n *Node) { n.Seed++ },
	"flow_capacity": func(n *Node) { n.FlowCapacity *= 2 },
	"mtu":           func(n *Node) { n.MTU = 9000 },
	"too_big":       func(n *Node) { n.TooBig = TooBigDrop },
	"icmp_rate":     func(n *Node) { n.ICMPRate++ },
	"fragments":     func(n *Node) { n.Fragments = "drop" },
	"source_v4":     func(n *Node) { n.SourceV4 = "198.18.0.99" },
	"source_v6":     func(n *Node) { n.SourceV6 = "2001:db8::99" },
	"admin_addr":    func(n *Node) { n.AdminAddr = "127.0.0.1:7000" },
	"snat":          func(n *Node) { n.SNAT = append(n.SNAT, "198.18.40.99") },
	"snat_ports":    func(n *Node) { n.SNATPorts = &PortRange{Lo: 2048, Hi: 65535} },
	"bgp": func(n *Node) {
		n.BGP = &BGP{ASN: 65001, RouterID: "198.18.0.1", ShutdownGrace: time.Second, Peers: []BGPPeer{{Address: "198.18.0.1", ASN: 65000}}}
	},
	"cluster": func(n *Node) {
		n.Cluster = &Cluster{Bind: "198.18.30.11:7946", Key: "0123456789abcdef", Replicas: 2, Shards: 4096, Capacity: 1024, AskTimeout: time.Second, TTL: time.Hour}
	},
	"l2": func(n *Node) {
		n.L2 = &L2{Interface: "eth0", GratuitousInterval: 100 * time.Millisecond}
	},
	"fastpath": func(n *Node) {
		n.Fastpath = &Fastpath{Key: "0123456789abcdef", Port: 6080, Idle: 10 * time.Second, Max: 1024}
	},
}

func TestRestartRulesExhaustive(t *testing.T) {
	typ := reflect.TypeFor[Node]()
	if typ.NumField() != len(RestartRules) {
		t.Errorf("Node has %d fields, RestartRules %d", typ.NumField(), len(RestartRules))
	}
	for i := range typ.NumField() {
		name := yamlName(typ.Field(i))
		if i >= len(RestartRules) || RestartRules[i].Field != "node."+name {
			t.Errorf("Node field %s (node.%s) has no rule at index %d of RestartRules: say whether a running node can change it", typ.Field(i).Name, name, i)
		}
		if restartChanges[name] == nil {
			t.Errorf("node.%s: no change in restartChanges to test its rule with", name)
		}
	}
}

// Each field's rule, tested by changing only that field of a valid
// configuration.
func TestNeedsRestart(t *testing.T) {
	want := map[string]bool{ // the rules, written out a second time on purpose
		"node.interfaces": true, "node.io": true, "node.xdp_mode": true, "node.offload": true, "node.workers": true,
		"node.flow_capacity": true, "node.bgp": true, "node.admin_addr": true, "node.snat": true, "node.snat_ports": true, "node.cluster": true, "node.l2": true, "node.fastpath": true,
		"node.gue_port": false, "node.seed": false, "node.mtu": false, "node.too_big": false,
		"node.icmp_rate": false, "node.fragments": false, "node.source_v4": false, "node.source_v6": false,
	}
	for _, r := range RestartRules {
		t.Run(r.Field, func(t *testing.T) {
			w, ok := want[r.Field]
			if !ok {
				t.Fatalf("no expectation for %s", r.Field)
			}
			if r.Restart != w {
				t.Errorf("rule says restart=%v, want %v", r.Restart, w)
			}
			old := validNode(t)
			nw := validNode(t)
			restartChanges[r.Field[len("node."):]](&nw.Node)
			if err := nw.Validate(); err != nil {
				t.Fatalf("the test's change does not validate: %v", err)
			}
			err := NeedsRestart(&old.Node, &nw.Node)
			if got := errors.Is(err, ErrNeedsRestart); got != w {
				t.Fatalf("NeedsRestart = %v, want restart %v", err, w)
			}
			if w && err.Error()[:len(r.Field)] != r.Field {
				t.Errorf("error %q does not start with the field", err)
			}
		})
	}
	c := validNode(t)
	if err := NeedsRestart(&c.Node, &c.Node); err != nil {
		t.Errorf("no change: %v", err)
	}
}

func validNode(t *testing.T) *Config {
	t.Helper()
	c, err := Parse([]byte(`node:
  interfaces: [eth0]
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    backends:
      - address: 198.18.1.11
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The running configuration written out and read back (the admin API's
// edits, the backend transitions) needs no restart: settings left out
// (no communities, no snat) come back as empty lists, the same setting.
func TestNeedsRestartRoundTrip(t *testing.T) {
	doc := `node:
  interfaces: [eth0]
  bgp:
    asn: 65001
    router_id: 198.18.30.12
    peers:
      - {address: 198.18.30.1, asn: 65000, bfd: {min_rx: 100ms, min_tx: 100ms, multiplier: 3}}
vips:
  - name: a
    address: "198.18.0.10"
    protocol: tcp
    port: 80
    backends:
      - address: "198.18.30.101"
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := NeedsRestart(&c.Node, &back.Node); err != nil {
		t.Fatalf("written out and read back: %v\n%s", err, out)
	}
	back.Node.BGP.Communities = []string{"65001:1"}
	if err := NeedsRestart(&c.Node, &back.Node); !errors.Is(err, ErrNeedsRestart) {
		t.Fatalf("communities changed: %v, want ErrNeedsRestart", err)
	}
}
