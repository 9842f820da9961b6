package lbnode

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/mem"
	"github.com/sluicelb/sluice/internal/nettest"
	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

// The node resolves each backend's next hop in its namespace: frames leave
// with the interface's MAC as source and the backend's MAC as destination,
// from the interface's address; a backend nobody answers for is reported
// and its packets are counted as no_next_hop.
func TestNodeResolvesAndForwards(t *testing.T) {
	nettest.RequireRoot(t)
	lbns, bens := nettest.New(t, "lb"), nettest.New(t, "be")
	nettest.Veth(t, lbns, "eth0", "198.18.30.1/24", bens, "eth0", "198.18.30.11/24")
	beMAC := strings.TrimSpace(bens.Run(t, "cat", "/sys/class/net/eth0/address"))
	lbMAC := strings.TrimSpace(lbns.Run(t, "cat", "/sys/class/net/eth0/address"))

	cfg, err := config.Parse([]byte(`
node: {interfaces: [eth0], io: afpacket}
vips:
  - name: web
    address: 198.18.0.10
    protocol: tcp
    port: 80
    backends: [{address: 198.18.30.11}, {address: 198.18.30.99}]
`))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out [][]byte
	ml := mem.New(mem.Config{Sink: func(f []byte) { mu.Lock(); out = append(out, slices.Clone(f)); mu.Unlock() }})
	var logs bytes.Buffer
	var node *Node
	err = lbns.Do(func() error {
		var err error
		node, err = New(Options{
			Config: cfg,
			Log:    slog.New(slog.NewTextHandler(&logs, nil)),
			Open: func(ifname string, q int, vips []netip.Addr) (link.Link, string, error) {
				if ifname != "eth0" || q != 0 || len(vips) != 1 || vips[0] != netip.MustParseAddr("198.18.0.10") {
					t.Errorf("Open(%s, %d, %v)", ifname, q, vips)
				}
				return ml, "mem", nil
			},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "198.18.30.99") || !strings.Contains(logs.String(), "unresolved") {
		t.Errorf("unresolved backend not reported:\n%s", logs.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lbns.Do(func() error { return node.Run(ctx) }) }()

	clients := sim.Clients{Prefix: netip.MustParsePrefix("198.18.128.0/17")}
	vip := netip.MustParseAddrPort("198.18.0.10:80")
	const flows = 200
	for i := range uint32(flows) {
		f := sim.Frame{Src: clients.FlowSrc(i), Dst: vip, Proto: 6, TCPFlags: sim.SYN}
		b := make([]byte, f.Len())
		f.Encode(b)
		ml.Inject(b)
	}
	var c struct{ tx, noHop uint64 }
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		cs := node.Datapath().Counters()
		c.tx, c.noHop = cs.TxPackets, cs.Drops[pipeline.ReasonNoNextHop]
		if c.tx+c.noHop == flows {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.tx+c.noHop != flows || c.tx == 0 || c.noHop == 0 {
		t.Fatalf("tx %d, no_next_hop %d of %d flows", c.tx, c.noHop, flows)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, f := range out {
		dst, src := netip.MustParseAddr("198.18.30.11").As4(), netip.MustParseAddr("198.18.30.1").As4()
		if macString(f[0:6]) != beMAC || macString(f[6:12]) != lbMAC || !bytes.Equal(f[14+16:14+20], dst[:]) || !bytes.Equal(f[14+12:14+16], src[:]) {
			t.Fatalf("frame % x: want %s <- %s, 198.18.30.1 -> 198.18.30.11", f[:34], beMAC, lbMAC)
		}
	}
	var rep bytes.Buffer
	node.Report(&rep)
	if !strings.Contains(rep.String(), "UNRESOLVED") || !strings.Contains(rep.String(), "drop no_next_hop") {
		t.Errorf("report:\n%s", rep.String())
	}
}

func macString(b []byte) string {
	const hex = "0123456789abcdef"
	s := make([]byte, 0, 17)
	for i, x := range b {
		if i > 0 {
			s = append(s, ':')
		}
		s = append(s, hex[x>>4], hex[x&15])
	}
	return string(s)
}

// Apply refuses what only a restart can change and leaves the running
// generation alone; it applies VIP and backend changes as a new generation
// and steers the links to the new VIP set.
func TestApply(t *testing.T) {
	nettest.RequireRoot(t)
	lbns, bens := nettest.New(t, "lb"), nettest.New(t, "be")
	nettest.Veth(t, lbns, "eth0", "198.18.30.1/24", bens, "eth0", "198.18.30.11/24")
	base := `
node: {interfaces: [eth0], io: afpacket}
vips:
  - {name: web, address: 198.18.0.10, protocol: tcp, port: 80, backends: [{address: 198.18.30.11}]}
`
	parse := func(doc string) *config.Config {
		c, err := config.Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	sl := &steeredLink{Link: mem.New(mem.Config{})}
	var node *Node
	err := lbns.Do(func() (err error) {
		node, err = New(Options{Config: parse(base), Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)),
			Open: func(string, int, []netip.Addr) (link.Link, string, error) { return sl, "mem", nil }})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	gen := node.Datapath().Generation().ID
	for _, doc := range []string{
		strings.Replace(base, "interfaces: [eth0]", "interfaces: [eth1]", 1),
		strings.Replace(base, "io: afpacket", "io: afxdp", 1),
		strings.Replace(base, "io: afpacket}", "io: afpacket, workers: 2}", 1),
		strings.Replace(base, "io: afpacket}", "io: afpacket, flow_capacity: 1000}", 1),
	} {
		if err := node.Apply(context.Background(), parse(doc)); !errors.Is(err, ErrNeedsRestart) {
			t.Errorf("Apply(%q) = %v, want ErrNeedsRestart", doc, err)
		}
		if g := node.Datapath().Generation().ID; g != gen {
			t.Fatalf("a refused Apply changed the generation %d -> %d", gen, g)
		}
	}
	added := base + "  - {name: web6, address: \"198.18.0.11\", protocol: tcp, port: 443, backends: [{address: 198.18.30.11}]}\n"
	if err := lbns.Do(func() error { return node.Apply(context.Background(), parse(added)) }); err != nil {
		t.Fatal(err)
	}
	g := node.Datapath().Generation()
	if g.ID != gen+1 || len(g.Services) != 2 {
		t.Fatalf("generation %d with %d services after adding a VIP", g.ID, len(g.Services))
	}
	want := []netip.Addr{netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.11")}
	if !slices.Equal(sl.last, want) {
		t.Fatalf("links steered to %v, want %v", sl.last, want)
	}
}

// steeredLink is a mem link that records the VIP sets it is given.
type steeredLink struct {
	*mem.Link
	last []netip.Addr
}

func (s *steeredLink) SetVIPs(v []netip.Addr) error {
	s.last = slices.Clone(v)
	return nil
}
