package egress

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
	"github.com/sluicelb/sluice/internal/nettest"
)

// skbCtx returns a struct __sk_buff for BPF_PROG_TEST_RUN with ifindex set
// (the interface the test skb leaves by).
func skbCtx(ifindex int) []byte {
	c := make([]byte, 192) // sizeof(struct __sk_buff)
	binary.NativeEndian.PutUint32(c[40:], uint32(ifindex))
	return c
}

// ifaceIn returns the interface of the namespace.
func ifaceIn(t *testing.T, ns *nettest.NS, name string) *net.Interface {
	t.Helper()
	var ifc *net.Interface
	if err := ns.Do(func() (err error) { ifc, err = net.InterfaceByName(name); return err }); err != nil {
		t.Fatal(err)
	}
	return ifc
}

// TestFIB runs the program (BPF_PROG_TEST_RUN) with fib lookups in a
// namespace with routes to the backends. With forwarding off on the
// interface the kernel's lookup refuses, and the packet is left untouched;
// with it on and the next hop's neighbour known, the packet is
// encapsulated and gets the next hop's MACs; without the neighbour or
// without a route it is left untouched. Every case is counted.
func TestFIB(t *testing.T) {
	nettest.RequireRoot(t)
	a, b := nettest.New(t, "efa"), nettest.New(t, "efb")
	nettest.Veth(t, a, "up0", "198.18.1.10/24", b, "dn0", "198.18.1.1/24")
	nettest.Veth(t, a, "up1", "198.18.2.10/24", b, "dn1", "198.18.2.1/24")
	a.Run(t, "ip", "addr", "add", "2001:db8:1::10/64", "dev", "up0", "nodad")
	gw := net.HardwareAddr{2, 0, 0, 0, 0x99, 1}
	gw2 := net.HardwareAddr{2, 0, 0, 0, 0x99, 2}
	for _, c := range [][]string{
		{"ip", "route", "add", "198.18.50.0/24", "via", "198.18.1.1"},
		{"ip", "route", "add", "198.18.60.0/24", "via", "198.18.1.2"}, // no neighbour
		{"ip", "route", "add", "198.18.70.0/24", "via", "198.18.2.1"}, // the other interface
		{"ip", "-6", "route", "add", "2001:db8:50::/64", "via", "2001:db8:1::1"},
		{"ip", "-6", "route", "add", "2001:db8:60::/64", "via", "2001:db8:1::2"},
		{"ip", "neigh", "replace", "198.18.1.1", "lladdr", gw.String(), "dev", "up0", "nud", "permanent"},
		{"ip", "neigh", "replace", "2001:db8:1::1", "lladdr", gw.String(), "dev", "up0", "nud", "permanent"},
		{"ip", "neigh", "replace", "198.18.2.1", "lladdr", gw2.String(), "dev", "up1", "nud", "permanent"},
	} {
		a.Run(t, c...)
	}
	up0 := ifaceIn(t, a, "up0")

	p, err := load(options{flows: 64, mtu: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	run := func(frame []byte) (uint32, []byte) {
		t.Helper()
		opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256), Context: skbCtx(up0.Index)}
		var ret uint32
		if err := a.Do(func() (err error) { ret, err = p.objs.SluiceEgress.Run(opts); return err }); err != nil {
			t.Fatal(err)
		}
		return ret, opts.DataOut
	}
	type tcase struct {
		name    string
		client  netip.Addr
		vip     netip.Addr
		backend string
		ret     uint32
		mac     net.HardwareAddr // nil: untouched
		field   func(*Counters) *uint64
	}
	direct := func(c *Counters) *uint64 { return &c.Direct }
	cases := []tcase{
		{"ipv4", client4, vip4, "198.18.50.7", tcActOK, gw, direct},
		{"ipv6", client6, vip6, "2001:db8:50::7", tcActOK, gw, direct},
		{"ipv4 no neighbour", client4, vip4, "198.18.60.7", tcActOK, nil, func(c *Counters) *uint64 { return &c.NoNeigh }},
		{"ipv6 no neighbour", client6, vip6, "2001:db8:60::7", tcActOK, nil, func(c *Counters) *uint64 { return &c.NoNeigh }},
		{"ipv4 no route", client4, vip4, "203.0.113.9", tcActOK, nil, func(c *Counters) *uint64 { return &c.NoRoute }},
		{"ipv6 no route", client6, vip6, "2001:db8:ffff::9", tcActOK, nil, func(c *Counters) *uint64 { return &c.NoRoute }},
		// The lookup is the host's output lookup on the interface the
		// packet leaves by (BPF_FIB_LOOKUP_OUTPUT): a backend routed by
		// another interface is not sent direct.
		{"ipv4 other interface", client4, vip4, "198.18.70.7", tcActOK, nil, func(c *Counters) *uint64 { return &c.NoRoute }},
	}
	check := func(tc tcase, sport uint16) {
		t.Helper()
		frame := l4Frame(unix.IPPROTO_UDP, tc.client, tc.vip, sport, 53, 0, 0, []byte("query"))
		h := uint64(sport) * 0x9e3779b97f4a7c15
		tgt := Target{Backend: netip.MustParseAddr(tc.backend), SrcPort: encap.SrcPort(h), FlowLabel: encap.FlowLabel(h)}
		if err := p.Put(flowOf(unix.IPPROTO_UDP, tc.client, tc.vip, sport, 53), tgt); err != nil {
			t.Fatal(err)
		}
		before := counters(t, p)
		ret, out := run(frame)
		after := counters(t, p)
		if *tc.field(&after) != *tc.field(&before)+1 {
			t.Errorf("%s: reason not counted: %+v -> %+v", tc.name, before, after)
		}
		if ret != tc.ret {
			t.Errorf("%s: verdict %d, want %d", tc.name, ret, tc.ret)
		}
		if tc.mac == nil {
			if !bytes.Equal(out, frame) {
				t.Errorf("%s: changed:\n got %x\nwant %x", tc.name, out, frame)
			}
			return
		}
		want := goEncap(t, frame, tc.client, tgt, h)
		copy(want[0:6], tc.mac)
		copy(want[6:12], up0.HardwareAddr)
		if !bytes.Equal(out, want) {
			t.Errorf("%s:\n got %x\nwant %x", tc.name, out, want)
		}
	}
	// Forwarding off (a new namespace's default): the kernel's lookup
	// refuses.
	for i, tc := range cases[:2] {
		tc.mac, tc.field = nil, func(c *Counters) *uint64 { return &c.FwdDisabled }
		check(tc, uint16(100+i))
	}
	a.Run(t, "sysctl", "-qw", "net.ipv4.conf.up0.forwarding=1", "net.ipv6.conf.up0.forwarding=1")
	for i, tc := range cases {
		check(tc, uint16(200+i))
	}
}
