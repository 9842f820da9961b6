package packet

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

var writeCorpus = flag.Bool("write-corpus", false, "write the seed corpora of the fuzz targets to testdata/fuzz")

// FuzzDecode feeds whole frames to Decode. Besides not panicking, every
// result must be deterministic and independent of what p held before; an
// OK result must satisfy checkInvariants and must not change when the
// Ethernet padding after the IP packet changes; and where gopacket decodes
// an IPv4/IPv6 TCP/UDP frame cleanly, the two must agree.
func FuzzDecode(f *testing.F) {
	for _, fr := range allFrames(f) {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var p Parsed
		p.Decode(frame)
		if p.Verdict >= NumVerdicts {
			t.Fatalf("verdict %d out of range", p.Verdict)
		}
		dirty := Parsed{Verdict: 3, NumVLANs: 2, VLANs: [2]uint16{1, 2}, L4Off: 99, Tuple: Tuple{SrcPort: 7}, HasInner: true,
			InnerPorts: true, innerComplete: true, MTU: 5, Inner: Tuple{Proto: 6}, TCPOptOff: 1, Frag: LaterFragment}
		dirty.Decode(frame)
		if dirty != p {
			t.Fatalf("Decode depends on the previous contents:\n got %+v\nwant %+v", dirty, p)
		}
		if p.Verdict != OK {
			gopacketAgrees(t, frame, &p)
			return
		}
		checkInvariants(t, frame, &p)

		// Padding after the IP packet is not part of it.
		var q Parsed
		q.Decode(frame[:p.L3End])
		if q != p {
			t.Fatalf("padding removed:\n got %+v\nwant %+v", q, p)
		}
		padded := append(frame[:p.L3End:p.L3End], 0xff, 0xff, 0xff, 0xff, 0x45, 0x60, 0x00, 0x00)
		q.Decode(padded)
		if q != p {
			t.Fatalf("padding added:\n got %+v\nwant %+v", q, p)
		}
		gopacketAgrees(t, frame, &p)
	})
}

type feedback struct{ truncated bool }

func (f *feedback) SetTruncated() { f.truncated = true }

// gopacketAgrees decodes frame with gopacket's layers, one header at a time,
// as far as Ethernet, up to two VLAN tags, an IPv4 or IPv6 header without
// extension headers, and TCP or UDP. When gopacket reads all of that
// without error or truncation, Decode must have said OK and agree with it
// field by field. Where the two define a packet differently the frame is
// skipped: gopacket takes an IPv4 total length of 0 as "TSO, use the frame"
// and a UDP length of 0 as a jumbogram; it does not check the IPv4 version
// nibble; it reads any number of VLAN tags but not TPID 0x9100.
func gopacketAgrees(t *testing.T, frame []byte, p *Parsed) {
	t.Helper()
	var df feedback
	var eth layers.Ethernet
	if eth.DecodeFromBytes(frame, &df) != nil {
		return
	}
	data := eth.Payload
	et := eth.EthernetType
	var tcis []uint16
	for et == layers.EthernetTypeDot1Q || et == layers.EthernetTypeQinQ {
		var d layers.Dot1Q
		if d.DecodeFromBytes(data, &df) != nil {
			return
		}
		tci := uint16(d.Priority)<<13 | d.VLANIdentifier
		if d.DropEligible {
			tci |= 0x1000
		}
		tcis = append(tcis, tci)
		et, data = d.Type, d.Payload
	}
	if len(tcis) > MaxVLANs {
		return
	}
	l3Off := len(frame) - len(data)
	var w Parsed // what gopacket says
	w.EtherType = uint16(et)
	w.NumVLANs = uint8(len(tcis))
	copy(w.VLANs[:], tcis)
	w.L3Off = l3Off
	var l4 []byte
	switch et {
	case layers.EthernetTypeIPv4:
		var ip layers.IPv4
		if ip.DecodeFromBytes(data, &df) != nil || df.truncated || ip.Version != 4 || binary.BigEndian.Uint16(data[2:]) == 0 {
			return
		}
		w.L3End = l3Off + int(ip.Length)
		w.TOS, w.TTL, w.FragID = ip.TOS, ip.TTL, uint32(ip.Id)
		w.Tuple = Tuple{Src: addr16(ip.SrcIP), Dst: addr16(ip.DstIP), Proto: uint8(ip.Protocol), IPVersion: 4}
		w.L4Off = l3Off + len(ip.Contents)
		switch {
		case ip.FragOffset != 0:
			w.Frag = LaterFragment
		case ip.Flags&layers.IPv4MoreFragments != 0:
			w.Frag = FirstFragment
		}
		l4 = ip.Payload
	case layers.EthernetTypeIPv6:
		var ip layers.IPv6
		if ip.DecodeFromBytes(data, &df) != nil || df.truncated || ip.Version != 6 || ip.HopByHop != nil {
			return
		}
		w.L3End = l3Off + IPv6HeaderLen + int(ip.Length)
		w.TOS, w.TTL = ip.TrafficClass, ip.HopLimit
		w.Tuple = Tuple{Src: addr16(ip.SrcIP), Dst: addr16(ip.DstIP), Proto: uint8(ip.NextHeader), IPVersion: 6}
		w.L4Off = l3Off + IPv6HeaderLen
		l4 = ip.Payload
	default:
		return
	}
	switch {
	case w.Frag == LaterFragment:
		if et != layers.EthernetTypeIPv4 {
			return
		}
		w.PayloadOff, w.L4Off = w.L4Off, 0
	case w.Tuple.Proto == ProtoTCP:
		var tcp layers.TCP
		if tcp.DecodeFromBytes(l4, &df) != nil || df.truncated {
			return
		}
		w.Tuple.SrcPort, w.Tuple.DstPort = uint16(tcp.SrcPort), uint16(tcp.DstPort)
		w.TCPFlags = l4[13]
		w.TCPOptOff = w.L4Off + TCPMinHeaderLen
		w.PayloadOff = w.L4Off + int(tcp.DataOffset)*4
	case w.Tuple.Proto == ProtoUDP:
		var udp layers.UDP
		if udp.DecodeFromBytes(l4, &df) != nil || df.truncated || udp.Length == 0 {
			return
		}
		w.Tuple.SrcPort, w.Tuple.DstPort = uint16(udp.SrcPort), uint16(udp.DstPort)
		w.PayloadOff = w.L4Off + UDPHeaderLen
	default:
		return // ICMP, extension headers, others: not compared
	}
	if p.Verdict != OK {
		t.Fatalf("gopacket decodes the frame cleanly, Decode says %v\nframe %x\ngopacket %+v", p.Verdict, frame, w)
	}
	if *p != w {
		t.Fatalf("Decode and gopacket disagree\nframe %x\n  Decode %+v\ngopacket %+v", frame, *p, w)
	}
}

// FuzzICMPQuote wraps arbitrary bytes as the quote of an ICMPv4
// fragmentation-needed or ICMPv6 packet-too-big message. The outer packet
// must always be OK. The quote is then checked against a simple model: if
// the quoted bytes, framed on their own, are a packet Decode calls OK, the
// inner tuple must be exactly the tuple Decode gives that packet.
func FuzzICMPQuote(f *testing.F) {
	for _, q := range quoteSeeds() {
		f.Add(q.v6, q.quote)
	}
	f.Fuzz(func(t *testing.T, v6 bool, quote []byte) {
		if len(quote) > 1400 {
			quote = quote[:1400]
		}
		frame, et := icmpErrorFrame(v6, quote)
		var p Parsed
		p.Decode(frame)
		if p.Verdict != OK || !p.IsICMPError() || p.MTU != 1280 {
			t.Fatalf("outer packet: verdict %v, ICMP error %v, MTU %d", p.Verdict, p.IsICMPError(), p.MTU)
		}
		checkInvariants(t, frame, &p)

		var model Parsed
		model.Decode(cat(eth(et), quote))
		if model.Verdict == OK {
			if !p.HasInner || !p.InnerComplete() || p.Inner != model.Tuple {
				t.Fatalf("quote %x\n   inner %v (has %v, complete %v)\nwant %v", quote, p.Inner, p.HasInner, p.InnerComplete(), model.Tuple)
			}
			hasPorts := model.L4Off != 0 && (model.Tuple.Proto == ProtoTCP || model.Tuple.Proto == ProtoUDP ||
				(v6 && model.Tuple.Proto == ProtoICMPv6 && icmp6IsEcho(model.ICMPType)) ||
				(!v6 && model.Tuple.Proto == ProtoICMP && icmp4IsEcho(model.ICMPType)))
			if p.InnerPorts != hasPorts {
				t.Fatalf("quote %x: InnerPorts %v, want %v", quote, p.InnerPorts, hasPorts)
			}
		}
		if p.HasInner {
			var src, dst [16]byte
			if v6 {
				src, dst = [16]byte(quote[8:24]), [16]byte(quote[24:40])
			} else {
				src, dst = m4([4]byte(quote[12:16])), m4([4]byte(quote[16:20]))
			}
			if p.Inner.Src != src || p.Inner.Dst != dst {
				t.Fatalf("inner addresses %v are not the quote's", p.Inner)
			}
		}
	})
}

// icmpErrorFrame frames quote in an ICMP error of the given version with
// MTU 1280, and returns the EtherType of the quoted packet.
func icmpErrorFrame(v6 bool, quote []byte) (frame []byte, et uint16) {
	if v6 {
		return cat(eth(EtherTypeIPv6), ip6(ProtoICMPv6, icmp(ICMPv6PacketTooBig, 0, 1280, quote))), EtherTypeIPv6
	}
	return cat(eth(EtherTypeIPv4), ip4(ProtoICMP, 0, nil, icmp(ICMPv4DestUnreachable, ICMPv4CodeFragNeeded, 1280, quote))), EtherTypeIPv4
}

type quoteSeed struct {
	name  string
	v6    bool
	quote []byte
}

func quoteSeeds() []quoteSeed {
	v6ext := ip6(ProtoHopByHop, cat(ext6(ProtoRouting, 0), ext6(ProtoFragment, 1), frag6(ProtoUDP, 0, true, 1), udp(9, 10, []byte("abc"))))
	return []quoteSeed{
		{"v4-tcp-cut", false, quotedV4TCP[:28]},
		{"v4-tcp-full", false, quotedV4TCP[:60]},
		{"v4-udp-full", false, ip4(ProtoUDP, 0, nil, udp(53, 5353, []byte("answer")))},
		{"v4-options-tcp", false, ip4(ProtoTCP, 0, []byte{1, 1, 1, 0}, tcp(1, 2, TCPFlagSYN, nil, nil))},
		{"v4-later-fragment", false, ip4(ProtoTCP, 100, nil, []byte("fragment data"))},
		{"v4-first-fragment", false, ip4(ProtoUDP, IPv4FlagMF, nil, udp(7, 8, make([]byte, 16)))},
		{"v4-echo", false, ip4(ProtoICMP, 0, nil, icmp(ICMPv4EchoRequest, 0, 0x11110001, nil))},
		{"v4-gre", false, ip4(47, 0, nil, make([]byte, 8))},
		{"v4-header-only", false, quotedV4TCP[:20]},
		{"v6-tcp-cut", true, quotedV6TCP[:48]},
		{"v6-tcp-full", true, quotedV6TCP[:60]},
		{"v6-ext-udp", true, v6ext},
		{"v6-ext-cut", true, v6ext[:50]},
		{"v6-later-fragment", true, ip6(ProtoFragment, cat(frag6(ProtoTCP, 64, false, 3), make([]byte, 8)))},
		{"v6-echo", true, ip6(ProtoICMPv6, icmp(ICMPv6EchoRequest, 0, 0x22220001, nil))},
		{"v6-esp", true, ip6(ProtoESP, make([]byte, 16))},
		{"garbage", false, []byte("not a packet at all, really not")},
	}
}

// TestWriteFuzzCorpus writes testdata/fuzz seed files, one per frame shape,
// when run with -write-corpus. The files are committed; FuzzDecode and
// FuzzICMPQuote also run them as plain tests.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -write-corpus to regenerate testdata/fuzz")
	}
	write := func(target, name string, args ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(a)))
			case bool:
				fmt.Fprintf(&b, "bool(%v)\n", a)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range verdictCases() {
		write("FuzzDecode", tc.name, tc.frame)
	}
	for _, gc := range goldenCases(t) {
		write("FuzzDecode", "golden-"+gc.name, gc.frame)
	}
	for _, q := range quoteSeeds() {
		write("FuzzICMPQuote", q.name, q.v6, q.quote)
	}
}
