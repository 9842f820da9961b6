package packet

import (
	"bytes"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	gVTEP4, gNode4 = net.IP{198, 18, 40, 2}, net.IP{198, 18, 40, 11}
	gVTEP6, gNode6 = net.ParseIP("2001:db8:40::2"), net.ParseIP("2001:db8:40::11")
)

func gVXLAN(vni uint32) *layers.VXLAN { return &layers.VXLAN{ValidIDFlag: true, VNI: vni} }

func gUDP(sport, dport layers.UDPPort) *layers.UDP {
	return &layers.UDP{SrcPort: sport, DstPort: dport}
}

type vxlanCase struct {
	name  string
	frame []byte
	port  uint16
	want  VXLANVerdict
	vni   uint32
	inner *Tuple // the inner frame's tuple (VXLANOK)
	vlan  int    // outer VLAN ID, -1: untagged
}

func vxlanCases(t testing.TB) []vxlanCase {
	innerV4 := []gopacket.SerializableLayer{gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolTCP, gV4Cli, gV4VIP), gTCP(40000, 443), gopacket.Payload("GET /")}
	innerV6 := []gopacket.SerializableLayer{gEth(layers.EthernetTypeIPv6), gIPv6(layers.IPProtocolUDP, gV6Cli, gV6VIP), gUDP(5353, 53), gopacket.Payload("query")}
	outer4 := func(dport layers.UDPPort, vx *layers.VXLAN, inner ...gopacket.SerializableLayer) []byte {
		return serialize(t, append([]gopacket.SerializableLayer{gEth(layers.EthernetTypeIPv4),
			gIPv4(layers.IPProtocolUDP, gVTEP4, gNode4), gUDP(51000, dport), vx}, inner...)...)
	}
	tagged := serialize(t, append([]gopacket.SerializableLayer{gEth(layers.EthernetTypeDot1Q),
		&layers.Dot1Q{Priority: 1, VLANIdentifier: 100, Type: layers.EthernetTypeIPv6},
		gIPv6(layers.IPProtocolUDP, gVTEP6, gNode6), gUDP(51000, 4789), gVXLAN(0xabcdef),
		gEth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4}},
		innerV4[1:]...)...)
	noVNI := outer4(4789, &layers.VXLAN{VNI: 100}, innerV4...)
	short := serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolUDP, gVTEP4, gNode4), gUDP(51000, 4789),
		gVXLAN(100), gopacket.Payload(make([]byte, 13)))
	fragIP := gIPv4(layers.IPProtocolUDP, gVTEP4, gNode4)
	fragIP.Flags = layers.IPv4MoreFragments
	frag := serialize(t, append([]gopacket.SerializableLayer{gEth(layers.EthernetTypeIPv4), fragIP, gUDP(51000, 4789), gVXLAN(100)}, innerV4...)...)
	// A minimal inner frame: the outer frame ends exactly at the inner
	// Ethernet header, then Ethernet padding that is not part of it.
	minimal := serialize(t, gEth(layers.EthernetTypeIPv4), gIPv4(layers.IPProtocolUDP, gVTEP4, gNode4), gUDP(51000, 4789),
		gVXLAN(1), gopacket.Payload(make([]byte, 14)))
	padded := append(bytes.Clone(minimal), 0xee, 0xee, 0xee, 0xee)

	return []vxlanCase{
		{"v4-vni100", outer4(4789, gVXLAN(100), innerV4...), 4789, VXLANOK, 100,
			tupleOf(ProtoTCP, gV4Cli, gV4VIP, 40000, 443), -1},
		{"v6-tagged-max-vni", tagged, 4789, VXLANOK, 0xabcdef, tupleOf(ProtoTCP, gV4Cli, gV4VIP, 40000, 443), 100},
		{"v4-vni200-inner-v6", outer4(4789, gVXLAN(200), innerV6...), 4789, VXLANOK, 200,
			tupleOf(ProtoUDP, gV6Cli, gV6VIP, 5353, 53), -1},
		{"linux-port", outer4(8472, gVXLAN(300), innerV4...), 8472, VXLANOK, 300,
			tupleOf(ProtoTCP, gV4Cli, gV4VIP, 40000, 443), -1},
		{"padded", padded, 4789, VXLANOK, 1, nil, -1},
		{"other-port", outer4(8472, gVXLAN(300), innerV4...), 4789, NotVXLAN, 0, nil, -1},
		{"dns", serialize(t, innerV6...), 4789, NotVXLAN, 0, nil, -1},
		{"tcp", serialize(t, innerV4...), 443, NotVXLAN, 0, nil, -1},
		{"no-vni", noVNI, 4789, VXLANNoVNI, 0, nil, -1},
		{"short", short, 4789, VXLANTruncated, 0, nil, -1},
		{"fragment", frag, 4789, VXLANFragment, 0, nil, -1},
	}
}

func TestVXLANGolden(t *testing.T) {
	for _, c := range vxlanCases(t) {
		t.Run(c.name, func(t *testing.T) {
			var p Parsed
			p.Decode(c.frame)
			if p.Verdict != OK {
				t.Fatalf("outer Decode: %v", p.Verdict)
			}
			vni, inner, end, v := p.VXLAN(c.frame, c.port)
			if v != c.want || vni != c.vni {
				t.Fatalf("VXLAN = vni %d, %v; want vni %d, %v", vni, v, c.vni, c.want)
			}
			if vid, ok := p.OuterVLAN(); ok != (c.vlan >= 0) || ok && int(vid) != c.vlan {
				t.Errorf("OuterVLAN = %d %v, want %d", vid, ok, c.vlan)
			}
			if v != VXLANOK {
				if vni != 0 || inner != 0 || end != 0 {
					t.Errorf("not OK but inner %d end %d", inner, end)
				}
				return
			}
			// gopacket decodes the same frame (registered on port 4789).
			if c.port == VXLANPort {
				pkt := gopacket.NewPacket(c.frame, layers.LayerTypeEthernet, gopacket.Default)
				vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
				if vx == nil {
					t.Fatal("gopacket finds no VXLAN layer")
				}
				if vx.VNI != vni || !bytes.Equal(vx.Payload, c.frame[inner:end]) {
					t.Fatalf("gopacket: VNI %d, inner %x; Parsed: %d, %x", vx.VNI, vx.Payload, vni, c.frame[inner:end])
				}
			}
			if c.inner == nil {
				if end-inner != EthernetHeaderLen {
					t.Fatalf("inner frame %d bytes, want the 14 of its Ethernet header", end-inner)
				}
				return
			}
			var q Parsed
			q.Decode(c.frame[inner:end])
			if q.Verdict != OK || q.Tuple != *c.inner {
				t.Fatalf("inner: %v %v, want %v", q.Verdict, q.Tuple, *c.inner)
			}
		})
	}
}

func TestVXLANHeaderView(t *testing.T) {
	h := VXLAN{0x08 | 0x80, 0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 0x99}
	if h.VNI() != 0xabcdef || h.Flags()&VXLANFlagI == 0 {
		t.Fatalf("VNI %#x flags %#x", h.VNI(), h.Flags())
	}
	if NumVXLANVerdicts.String() != "unknown" || VXLANNoVNI.String() != "no_vni" {
		t.Error("verdict names")
	}
	var p Parsed // not decoded: Verdict OK but nothing else
	if _, _, _, v := p.VXLAN(nil, VXLANPort); v != NotVXLAN {
		t.Errorf("empty Parsed: %v", v)
	}
}

func TestVXLANZeroAllocs(t *testing.T) {
	cases := vxlanCases(t)
	var sink int
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range cases {
			var p, q Parsed
			p.Decode(c.frame)
			vni, inner, end, v := p.VXLAN(c.frame, c.port)
			if v == VXLANOK {
				q.Decode(c.frame[inner:end])
			}
			vid, _ := p.OuterVLAN()
			sink += int(vni) + int(vid) + int(q.Tuple.SrcPort)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
	_ = sink
}

// FuzzVXLAN decodes arbitrary frames as VXLAN: no panic; an OK answer lies
// within the frame and the UDP datagram, agrees with gopacket's VXLAN
// decoder, and its inner frame decodes without panicking.
func FuzzVXLAN(f *testing.F) {
	for _, c := range vxlanCases(f) {
		f.Add(c.frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var p Parsed
		p.Decode(frame)
		vni, inner, end, v := p.VXLAN(frame, VXLANPort)
		if v >= NumVXLANVerdicts {
			t.Fatalf("verdict %d", v)
		}
		if p.Verdict != OK && v != NotVXLAN {
			t.Fatalf("%v for a frame Decode rejected (%v)", v, p.Verdict)
		}
		if v != VXLANOK {
			return
		}
		if vni >= 1<<24 || inner != p.PayloadOff+VXLANHeaderLen || end-inner < EthernetHeaderLen || end > p.L3End || p.L3End > len(frame) {
			t.Fatalf("vni %d inner %d end %d, payload %d, L3End %d, len %d", vni, inner, end, p.PayloadOff, p.L3End, len(frame))
		}
		var q Parsed
		q.Decode(frame[inner:end])
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		if vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN); vx != nil && vx.VNI != vni {
			t.Fatalf("gopacket VNI %d, Parsed %d", vx.VNI, vni)
		}
	})
}
