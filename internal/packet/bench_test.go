package packet

import "testing"

// benchFrames are the shapes the datapath sees, from the common case down.
var benchFrames = []struct {
	name  string
	frame []byte
}{
	{"ipv4-tcp", frameV4TCPAck},
	{"ipv4-tcp-syn", frameV4TCP},
	{"ipv6-tcp", frameV6TCP},
	{"vlan-ipv4-udp", frameVLANUDP},
	{"qinq-ipv6-tcp", frameQinQTCP},
	{"ipv6-ext-frag-udp", frameV6Ext},
	{"icmp-echo", frameV4Echo},
	{"icmp-frag-needed", frameFragNeeded},
	{"icmpv6-packet-too-big", framePacketTooBig},
	{"bad-tcp-offset", cat(eth(EtherTypeIPv4), ip4(ProtoTCP, 0, nil, patch(tcp(1, 2, 0, nil, nil), 12, 0x40)))},
	{"arp", cat(eth(EtherTypeARP), make([]byte, 28))},
}

func BenchmarkParse(b *testing.B) {
	for _, bf := range benchFrames {
		b.Run(bf.name, func(b *testing.B) {
			var p Parsed
			p.Decode(bf.frame)
			want := p.Verdict
			b.ReportAllocs()
			b.SetBytes(int64(len(bf.frame)))
			for b.Loop() {
				p.Decode(bf.frame)
			}
			if p.Verdict != want {
				b.Fatalf("verdict changed: %v", p.Verdict)
			}
		})
	}
}
