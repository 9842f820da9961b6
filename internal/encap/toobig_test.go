package encap

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestTooBig builds the ICMP answer for full-size TCP (IPv4) and UDP (IPv6)
// packets and checks it with gopacket: addresses and MACs swapped, type,
// code, MTU, checksums, the quote is the original packet's start, and the
// length limits of RFC 1812 and RFC 4443.
func TestTooBig(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		version    uint8
		payload    int
		vlan       bool
		mtu        uint32
		wantQuote  int
		wantIPType gopacket.LayerType
	}{
		{4, 1460, false, 1456, 576 - 28, layers.LayerTypeIPv4},
		{4, 1460, true, 1456, 576 - 28, layers.LayerTypeIPv4},
		{4, 100, false, 1400, 20 + 20 + 100, layers.LayerTypeIPv4}, // shorter than 548: quoted whole
		{6, 1452, false, 1412, 1280 - 48, layers.LayerTypeIPv6},
		{6, 1452, true, 1412, 1280 - 48, layers.LayerTypeIPv6},
	} {
		inner := buildInner(t, tc.version, tc.payload, r)
		l2 := []byte{
			0x02, 0, 0, 0, 0, 0xaa, // destination: this node
			0x02, 0, 0, 0, 0, 0xbb, // source: the router
		}
		if tc.vlan {
			l2 = append(l2, 0x81, 0x00, 0x00, 0x07)
		}
		if tc.version == 4 {
			l2 = append(l2, 0x08, 0x00)
		} else {
			l2 = append(l2, 0x86, 0xdd)
		}
		const headroom = 64
		buf := make([]byte, headroom+len(l2)+len(inner))
		copy(buf[headroom:], l2)
		copy(buf[headroom+len(l2):], inner)
		l3 := headroom + len(l2)
		start, n := TooBig(buf, headroom, l3, len(buf), tc.version == 6, tc.mtu)
		if start < 0 {
			t.Fatalf("v%d: TooBig failed", tc.version)
		}
		frame := buf[start : start+n]
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if eth.DstMAC.String() != "02:00:00:00:00:bb" || eth.SrcMAC.String() != "02:00:00:00:00:aa" {
			t.Errorf("v%d: MACs %v -> %v, want swapped", tc.version, eth.SrcMAC, eth.DstMAC)
		}
		if tc.vlan {
			if d := pkt.Layer(layers.LayerTypeDot1Q); d == nil || d.(*layers.Dot1Q).VLANIdentifier != 7 {
				t.Errorf("v%d: VLAN tag lost", tc.version)
			}
		}
		orig := gopacket.NewPacket(inner, tc.wantIPType, gopacket.Default)
		var quote []byte
		switch tc.version {
		case 4:
			oip := orig.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ok {
				t.Fatalf("v4: no IPv4 layer: %v", pkt)
			}
			if !ip.SrcIP.Equal(oip.DstIP) || !ip.DstIP.Equal(oip.SrcIP) || ip.Protocol != layers.IPProtocolICMPv4 {
				t.Errorf("v4: %v -> %v proto %v", ip.SrcIP, ip.DstIP, ip.Protocol)
			}
			if int(ip.Length) != 28+tc.wantQuote || ip.TTL != 64 {
				t.Errorf("v4: length %d ttl %d, want %d 64", ip.Length, ip.TTL, 28+tc.wantQuote)
			}
			if verifySum(frame[len(l2):len(l2)+20], 0) != 0 {
				t.Error("v4: bad IP header checksum")
			}
			ic := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) {
				t.Errorf("v4: type/code %v", ic.TypeCode)
			}
			if got := uint32(ic.Seq); got != tc.mtu { // next-hop MTU: the low 16 bits of "rest of header"
				t.Errorf("v4: MTU %d, want %d", got, tc.mtu)
			}
			body := frame[len(l2)+20:]
			if verifySum(body, 0) != 0 {
				t.Error("v4: bad ICMP checksum")
			}
			quote = body[8:]
		case 6:
			oip := orig.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			ip, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if !ok {
				t.Fatalf("v6: no IPv6 layer: %v", pkt)
			}
			if !ip.SrcIP.Equal(oip.DstIP) || !ip.DstIP.Equal(oip.SrcIP) || ip.NextHeader != layers.IPProtocolICMPv6 {
				t.Errorf("v6: %v -> %v nh %v", ip.SrcIP, ip.DstIP, ip.NextHeader)
			}
			if int(ip.Length) != 8+tc.wantQuote {
				t.Errorf("v6: payload length %d, want %d", ip.Length, 8+tc.wantQuote)
			}
			ic := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if ic.TypeCode != layers.CreateICMPv6TypeCode(2, 0) {
				t.Errorf("v6: type/code %v", ic.TypeCode)
			}
			// gopacket verifies nothing; check the checksum with its own
			// pseudo-header computation.
			want := ic.Checksum
			ic.SetNetworkLayerForChecksum(ip)
			sb := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true}, ic, gopacket.Payload(ic.Payload)); err != nil {
				t.Fatal(err)
			}
			if got := uint16(sb.Bytes()[2])<<8 | uint16(sb.Bytes()[3]); got != want {
				t.Errorf("v6: ICMPv6 checksum %#04x, gopacket computes %#04x", want, got)
			}
			body := frame[len(l2)+40:]
			if mtu := uint32(body[4])<<24 | uint32(body[5])<<16 | uint32(body[6])<<8 | uint32(body[7]); mtu != tc.mtu {
				t.Errorf("v6: MTU %d, want %d", mtu, tc.mtu)
			}
			quote = body[8:]
		}
		if len(quote) != tc.wantQuote || !bytes.Equal(quote, inner[:tc.wantQuote]) {
			t.Errorf("v%d: quote of %d bytes, want the first %d of the original", tc.version, len(quote), tc.wantQuote)
		}
	}
}

func verifySum(b []byte, initial uint32) uint16 { return Checksum(b, initial) }

func TestTooBigNoHeadroom(t *testing.T) {
	buf := make([]byte, 14+1500)
	buf[14] = 0x45
	if start, _ := TooBig(buf, 0, 14, len(buf), false, 1400); start != -1 {
		t.Fatalf("TooBig without headroom returned %d, want -1", start)
	}
	if start, _ := TooBig(buf, 27, 41, len(buf), false, 1400); start != -1 {
		t.Fatalf("TooBig with 27 bytes of headroom for IPv4 returned %d, want -1", start)
	}
}

func TestTooBigAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	inner := buildInner(t, 4, 1460, r)
	buf := make([]byte, 64+14+len(inner))
	if n := testing.AllocsPerRun(100, func() {
		copy(buf[64+14:], inner)
		TooBig(buf, 64, 64+14, len(buf), false, 1400)
	}); n != 0 {
		t.Fatalf("TooBig allocates %v times", n)
	}
}
