package egress

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/nettest"
)

// skbCtx returns a struct __sk_buff for BPF_PROG_TEST_RUN with ifindex set
// (the interface the test skb leaves by).
func skbCtx(ifindex int) []byte {
	c := make([]byte, 192)
	binary.NativeEndian.PutUint32(c[40:], uint32(ifindex))
	return c
}

// TestFIB runs the program (BPF_PROG_TEST_RUN) with fib lookups in a
// namespace with routes to the backends: with the next hop's neighbour
// known the packet is encapsulated and gets the next hop's MACs; without
// the neighbour, without a route, or with forwarding off on the interface
// it is left untouched and counted.
func TestFIB(t *testing.T) {
	nettest.RequireRoot(t)
	a, b := nettest.New(t, "efa"), nettest.New(t, "efb")
	nettest.Veth(t, a, "up0", "198.18.1.10/24", b, "dn0", "198.18.1.1/24")
	a.Run(t, "ip", "addr", "add", "2001:db8:1::10/64", "dev", "up0", "nodad")
	a.Run(t, "ip", "route", "add", "198.18.50.0/24", "via", "198.18.1.1")
	a.Run(t, "ip", "-6", "route", "add", "2001:db8:50::/64", "via", "2001:db8:1::1")
	gw := net.HardwareAddr{2, 0, 0, 0, 0x99, 1}
	a.Run(t, "ip", "neigh", "replace", "198.18.1.1", "lladdr", gw.String(), "dev", "up0", "nud", "permanent")
	a.Run(t, "ip", "neigh", "replace", "2001:db8:1::1", "lladdr", gw.String(), "dev", "up0", "nud", "permanent")
	ifc := ifaceIn(t, a, "up0")

	p, err := load(options{flows: 64, mtu: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	run := func(frame []byte) (uint32, []byte, Counters) {
		t.Helper()
		out := make([]byte, len(frame)+256)
		opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: skbCtx(ifc.Index)}
		var ret uint32
		if err := a.Do(func() (err error) { ret, err = p.objs.SluiceEgress.Run(opts); return err }); err != nil {
			t.Fatal(err)
		}
		c, err := p.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return ret, out[:len(opts.DataOut)], c
	}
	for _, fam := range []struct {
		name              string
		client, vip, back string
	}{{"ipv4", "198.18.1.10", "198.18.100.1", "198.18.50.7"}, {"ipv6", "2001:db8:1::10", "2001:db8:100::1", "2001:db8:50::7"}} {
		_ = fam
	}
	frame := l4Frame(unix.IPPROTO_UDP, client4, vip4, 1000, 53, 0, 0, []byte("x"))
	if err := p.Put(flowOf(unix.IPPROTO_UDP, client4, vip4, 1000, 53), Target{Backend: back4, SrcPort: 50000}); err != nil {
		t.Fatal(err)
	}
	ret, out, c := run(frame)
	t.Logf("ret %d out %x c %+v", ret, out, c)
	a.Run(t, "sysctl", "-w", "net.ipv4.conf.up0.forwarding=1")
	ret, out, c = run(frame)
	t.Logf("ret %d out %x c %+v", ret, out, c)
	_ = bytes.Equal
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
