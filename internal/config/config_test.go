package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `
node:
  interfaces: [eth0]
  io: afpacket
  seed: 42
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    backends:
      - address: 198.18.30.11
      - address: 198.18.30.12
        weight: 0
  - name: web6
    address: 2001:db8::10
    protocol: tcp
    port: 80
    backends:
      - {address: "2001:db8:30::11", weight: 3}
`

func TestParseGood(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.GUEPort != 6080 || c.Node.Workers != 1 || c.Node.FlowCapacity != 1<<20 || c.Node.MTU != 1500 || c.Node.XDPMode != "auto" || c.Node.Offload != "off" {
		t.Errorf("defaults not applied: %+v", c.Node)
	}
	if w := *c.VIPs[0].Backends[0].Weight; w != 1 {
		t.Errorf("default weight %d", w)
	}
	if w := *c.VIPs[0].Backends[1].Weight; w != 0 {
		t.Errorf("explicit weight 0 became %d", w)
	}
	if c.VIPs[0].Encap != "gue" {
		t.Errorf("encap %q", c.VIPs[0].Encap)
	}
}

func TestExampleParses(t *testing.T) {
	if _, err := Load("../../examples/lb.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"empty", ``, []string{"empty configuration"}},
		{"unknown field", strings.Replace(good, "seed: 42", "seeed: 42", 1), []string{"field seeed not found"}},
		{"two documents", good + "\n---\n" + good, []string{"more than one YAML document"}},
		{"offload", strings.Replace(good, "seed: 42", "seed: 42\n  offload: always", 1), []string{"node.offload: always is not auto or off"}},
		{"routes", strings.Replace(good, "vips:", `tenants:
  - name: a
    vni: 100
    routes:
      - {prefix: 198.18.30.0/24, via: 198.18.30.1}
      - {prefix: 198.18.30.7/24, via: 198.18.30.2}
      - {prefix: 2001:db8::/64, via: 198.18.30.1}
vxlan: {address: 198.18.40.1}
routes:
  - {prefix: 198.18.30.300/32, via: 198.18.30.1}
  - {prefix: 198.18.31.0/24, via: 0.0.0.0}
  - {prefix: "2001:db8::/64", via: "fe80::1"}
vips:`, 1), []string{
			"tenants[0].routes[1].prefix: 198.18.30.7/24 is also the prefix of tenants[0].routes[0]",
			"tenants[0].routes[2].via: 198.18.30.1 is not of the prefix's address family",
			`routes[0].prefix: "198.18.30.300/32" is not an IP prefix`,
			`routes[1].via: "0.0.0.0" is not a unicast IP address`,
			"routes[2].via: fe80::1 is a link-local address without its zone",
		}},
		{"many problems at once", `
node:
  interfaces: [eth0, eth0, "a/b"]
  io: dpdk
  workers: 100
  gue_port: 70000
  mtu: 100
  source_v4: "2001:db8::1"
vips:
  - name: web
    address: 198.18.0.300
    protocol: sctp
    port: 80
    maglev_size: 1000
    encap: ipip
    second_chance: true
    backends:
      - address: 198.18.30.11
        weight: -1
      - address: 198.18.30.11
      - address: "2001:db8::5"
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 90
    port_end: 80
    backends: []
  - name: other
    address: 198.18.0.10
    protocol: tcp
    port: 0
    backends: [{address: 198.18.30.1}]
`, []string{
			"node.interfaces[1]: eth0 is listed twice",
			`node.interfaces[2]: "a/b" is not an interface name`,
			"node.io: dpdk is not afxdp, afpacket or auto",
			"node.workers: 100 is not between 1 and 64",
			"node.gue_port: 70000 is not a port",
			"node.mtu: 100 is not between 1280 and 9216",
			"node.source_v4: 2001:db8::1 is not an IPv4 address",
			`vips[0].address: "198.18.0.300" is not a unicast IP address`,
			`vips[0].protocol: "sctp" is not tcp or udp`,
			"vips[0].maglev_size: 1000 is not a prime >= 101",
			"vips[0].second_chance: true needs forwarding gue",
			"vips[0].backends[0].weight: -1 is negative",
			"vips[0].backends[1].address: 198.18.30.11 is also backends[0]",
			"vips[0].backends[2].address: 2001:db8::5 differs in family from backends[0]",
			"vips[1].name: web is also the name of vips[0]",
			"vips[1].port_end: 80 is not between port (90) and 65535",
			"vips[1].backends: at least one backend is required",
			"vips[2].port: 0 overlaps vips[1]",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			var fe *FieldError
			if len(tc.want) > 3 && !errors.As(err, &fe) {
				t.Errorf("no FieldError in %v", err)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load("/nonexistent/lb.yaml"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err %v", err)
	}
}

// Every document in testdata/bad is rejected with the error its "# want:"
// lines name (each a substring of the error).
func TestBadCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) < 20 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, line := range strings.Split(string(b), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					want = append(want, w)
				}
			}
			if len(want) == 0 {
				t.Fatal("no # want: line")
			}
			_, err = Parse(b)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestStateAndAffinityDefaults(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(good, "        weight: 0", "        weight: 0\n        state: draining", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.VIPs[0].Affinity != AffinityOnChange || c.Node.AdminAddr != DefaultAdminAddr {
		t.Errorf("defaults: affinity %q admin %q", c.VIPs[0].Affinity, c.Node.AdminAddr)
	}
	b := c.VIPs[0].Backends
	if b[0].State != StateActive || b[0].EffectiveWeight() != 1 {
		t.Errorf("backend 0: %q %d", b[0].State, b[0].EffectiveWeight())
	}
	three := 3
	d := Backend{Weight: &three, State: StateDraining}
	if b[1].State != StateDraining || d.EffectiveWeight() != 0 {
		t.Errorf("draining: %q %d", b[1].State, d.EffectiveWeight())
	}
}

func TestClusterSection(t *testing.T) {
	doc := `node:
  interfaces: [eth0]
  cluster:
    bind: 198.18.30.11:7946
    peers: [198.18.30.12:7946]
    key: 0123456789abcdef
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    backends:
      - address: 198.18.30.101
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Node.Cluster
	if cl == nil || cl.Replicas != DefaultClusterReplicas || cl.Shards != DefaultClusterShards || cl.Capacity != DefaultClusterCapacity {
		t.Fatalf("defaults: %+v", cl)
	}
	if a := GossipAddr(netip.MustParseAddrPort(cl.Bind)); a.String() != "198.18.30.11:7947" {
		t.Errorf("gossip address %v", a)
	}
	if _, err := Parse([]byte(strings.Replace(doc, "    port: 80\n", "    port: 80\n    affinity: always\n", 1))); err != nil {
		t.Errorf("affinity always with node.cluster: %v", err)
	}
	c, err = Parse([]byte(good))
	if err != nil || c.Node.Cluster != nil {
		t.Fatalf("without a cluster section: %v %+v", err, c.Node.Cluster)
	}
	// The IDs are pinned: every node of a cluster, whatever its version,
	// must compute the same ones.
	if id := ServiceID("web"); id != 0xb348 {
		t.Errorf("ServiceID(web) = %#x", id)
	}
	if id := BackendID("web", "198.18.30.101"); id != BackendID("web", "198.18.30.101") || id == BackendID("web", "198.18.30.102") || id == BackendID("www", "198.18.30.101") {
		t.Errorf("BackendID not a function of the VIP and address")
	}
	if BackendID("web", "2001:db8::1") != BackendID("web", "2001:DB8:0::1") {
		t.Errorf("BackendID depends on the address's spelling")
	}
}
