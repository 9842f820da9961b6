package sim

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// verify decodes b with gopacket and checks every checksum independently.
func verify(t *testing.T, b []byte, wantSrc netip.AddrPort, wantFlags uint8) {
	t.Helper()
	pkt := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	var net gopacket.NetworkLayer
	if ip4, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		net = ip4
		want := ip4.Checksum
		ip4.Checksum = 0
		buf := gopacket.NewSerializeBuffer()
		if err := ip4.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
			t.Fatal(err)
		}
		got := uint16(buf.Bytes()[10])<<8 | uint16(buf.Bytes()[11])
		if got != want {
			t.Errorf("IPv4 checksum %#04x, want %#04x", want, got)
		}
		if ip4.SrcIP.String() != wantSrc.Addr().String() {
			t.Errorf("src %v, want %v", ip4.SrcIP, wantSrc.Addr())
		}
	} else if ip6, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		net = ip6
		if ip6.SrcIP.String() != wantSrc.Addr().String() {
			t.Errorf("src %v, want %v", ip6.SrcIP, wantSrc.Addr())
		}
	} else {
		t.Fatal("no IP layer")
	}
	if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		if int(tcp.SrcPort) != int(wantSrc.Port()) {
			t.Errorf("sport %d, want %d", tcp.SrcPort, wantSrc.Port())
		}
		flags := uint8(0)
		for i, f := range []bool{tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK} {
			if f {
				flags |= 1 << i
			}
		}
		if flags != wantFlags {
			t.Errorf("flags %#x, want %#x", flags, wantFlags)
		}
		tcp.SetNetworkLayerForChecksum(net)
		if !checksumOK(t, tcp, net) {
			t.Error("TCP checksum wrong")
		}
	} else if udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		if int(udp.SrcPort) != int(wantSrc.Port()) {
			t.Errorf("sport %d, want %d", udp.SrcPort, wantSrc.Port())
		}
		udp.SetNetworkLayerForChecksum(net)
		if !checksumOK(t, udp, net) {
			t.Error("UDP checksum wrong")
		}
	}
}

// checksumOK re-serialises the L4 layer with its payload and compares the
// checksum gopacket computes with the one on the wire.
func checksumOK(t *testing.T, l interface {
	gopacket.SerializableLayer
	LayerContents() []byte
	LayerPayload() []byte
}, _ gopacket.NetworkLayer) bool {
	t.Helper()
	wire := append([]byte(nil), l.LayerContents()...)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, l, gopacket.Payload(l.LayerPayload())); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	off := 16 // TCP
	if len(wire) == 8 {
		off = 6 // UDP
	}
	return out[off] == wire[off] && out[off+1] == wire[off+1]
}

func TestEncodeAndPatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vip     string
		clients string
		proto   uint8
	}{
		{"ipv4-tcp", "198.18.0.10:80", "198.18.128.0/17", 6},
		{"ipv4-udp", "198.18.0.10:9000", "198.18.128.0/17", 17},
		{"ipv6-tcp", "[2001:db8::10]:443", "2001:db8:c::/64", 6},
		{"ipv6-udp", "[2001:db8::10]:443", "2001:db8:c::/64", 17},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := Clients{Prefix: netip.MustParsePrefix(tc.clients)}
			f := Frame{Dst: netip.MustParseAddrPort(tc.vip), Proto: tc.proto, TCPFlags: ACK, Payload: 10}
			f.Src = cl.FlowSrc(7)
			b := make([]byte, 256)
			n := f.Encode(b)
			if n != f.Len() {
				t.Fatalf("Encode = %d, want %d", n, f.Len())
			}
			verify(t, b[:n], f.Src, ACK)

			p := NewPatcher(f, cl)
			for _, i := range []uint32{0, 1, 16383, 16384, 1 << 20, 123456789} {
				for _, flags := range []uint8{SYN, ACK, ACK | PSH, FIN | ACK, RST} {
					n := p.Write(b, i, flags)
					want := flags
					if tc.proto != 6 {
						want = 0
					}
					verify(t, b[:n], cl.FlowSrc(i), want)
				}
			}
		})
	}
}

func TestFlowSrcDistinct(t *testing.T) {
	cl := Clients{Prefix: netip.MustParsePrefix("198.18.128.0/17")}
	seen := make(map[netip.AddrPort]bool)
	for i := uint32(0); i < 100000; i++ {
		s := cl.FlowSrc(i)
		if seen[s] {
			t.Fatalf("flow %d repeats source %v", i, s)
		}
		if !cl.Prefix.Contains(s.Addr()) {
			t.Fatalf("flow %d source %v outside %v", i, s, cl.Prefix)
		}
		seen[s] = true
	}
}
