package afxdp

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluicelb/sluice/internal/nettest"
)

// TestProgramVerdicts runs the XDP program on crafted packets with
// BPF_PROG_TEST_RUN. The fallback action (used when the queue has no socket)
// is XDP_DROP here, so that a VIP hit is visible as DROP and a miss as PASS.
func TestProgramVerdicts(t *testing.T) {
	nettest.RequireRoot(t)
	o, err := newObjects(1, xdpDrop, progOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	vip4, vip6 := netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("2001:db8::100")
	other4, other6 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("2001:db8::1")
	if err := o.setVIPs([]netip.Addr{vip4, vip6, netip.MustParseAddr("::ffff:198.18.0.101")}); err != nil {
		t.Fatal(err)
	}
	mapped := netip.MustParseAddr("198.18.0.101")

	src4, src6 := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("2001:db8:1::1")
	udp4 := func(dst netip.Addr) []byte { return udpFrame(macA, macB, src4, dst, 1000, 2000, []byte("hello")) }
	udp6 := func(dst netip.Addr) []byte { return udpFrame(macA, macB, src6, dst, 1000, 2000, []byte("hello")) }

	tests := []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"ipv4 vip", udp4(vip4), xdpDrop},
		{"ipv4 mapped vip", udp4(mapped), xdpDrop},
		{"ipv4 other", udp4(other4), xdpPass},
		{"ipv6 vip", udp6(vip6), xdpDrop},
		{"ipv6 other", udp6(other6), xdpPass},
		{"802.1Q ipv4 vip", vlanTag(udp4(vip4), 0x8100, 7), xdpDrop},
		{"802.1Q ipv6 vip", vlanTag(udp6(vip6), 0x8100, 7), xdpDrop},
		{"802.1ad ipv4 vip", vlanTag(udp4(vip4), 0x88a8, 7), xdpDrop},
		{"802.1Q ipv4 other", vlanTag(udp4(other4), 0x8100, 7), xdpPass},
		{"arp", arpFrame(), xdpPass},
		{"ipv6 neighbour solicitation to a vip", icmp6Type(udp6(vip6), 135), xdpPass},
		{"ipv6 neighbour solicitation, truncated", icmp6Type(udp6(vip6), 135)[:14+40], xdpDrop},
		{"ipv6 echo request to a vip", icmp6Type(udp6(vip6), 128), xdpDrop},
		{"ipv6 udp to a vip, first byte 135", udp135(udp6(vip6)), xdpDrop},
		{"ipv4 truncated header", udp4(vip4)[:14+19], xdpPass},
		{"ipv4 just the header", udp4(vip4)[:14+20], xdpDrop},
		{"ipv6 truncated header", udp6(vip6)[:14+39], xdpPass},
		{"vlan truncated", vlanTag(udp4(vip4), 0x8100, 7)[:17], xdpPass},
		{"vlan truncated ipv4", vlanTag(udp4(vip4), 0x8100, 7)[:18+19], xdpPass},
		{"ethernet only", udp4(vip4)[:14], xdpPass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := o.prog.Run(&ebpf.RunOptions{Data: tc.pkt})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("verdict %d, want %d", got, tc.want)
			}
		})
	}

	// Replacing the set removes the old addresses.
	if err := o.setVIPs([]netip.Addr{other4}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pkt  []byte
		want uint32
	}{{udp4(vip4), xdpPass}, {udp6(vip6), xdpPass}, {udp4(other4), xdpDrop}} {
		got, err := o.prog.Run(&ebpf.RunOptions{Data: tc.pkt})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("after replace: verdict %d, want %d", got, tc.want)
		}
	}
	if err := o.setVIPs([]netip.Addr{{}}); err == nil {
		t.Error("SetVIPs accepted the zero Addr")
	}
}

// icmp6Type turns an IPv6 UDP frame into ICMPv6 of type typ (the program
// reads only the next header and the type).
func icmp6Type(f []byte, typ byte) []byte {
	f = append([]byte(nil), f...)
	f[14+6] = 58
	f[14+40] = typ
	return f
}

// udp135 keeps UDP but puts 135 where an ICMPv6 type would be.
func udp135(f []byte) []byte {
	f = append([]byte(nil), f...)
	f[14+40] = 135
	return f
}
