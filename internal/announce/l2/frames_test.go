package l2

import (
	"bytes"
	"encoding/hex"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var update = flag.Bool("update", false, "rewrite the golden frames")

var (
	mac    = net.HardwareAddr{0x02, 0x73, 0x6c, 0x1e, 0x00, 0x11}
	peer   = net.HardwareAddr{0x02, 0x73, 0x6c, 0x1e, 0x00, 0x01}
	vip4   = netip.MustParseAddr("198.18.0.10")
	vip6   = netip.MustParseAddr("2001:db8::10")
	ll     = netip.MustParseAddr("fe80::73:6cff:fe1e:11")
	router = netip.MustParseAddr("fe80::73:6cff:fe1e:1")
)

// golden compares f with testdata/name.hex (rewritten with -update).
func golden(t *testing.T, name string, f []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".hex")
	if *update {
		if err := os.WriteFile(p, []byte(hex.Dump(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.Dump(f); got != string(want) {
		t.Errorf("%s differs from the golden frame:\n%s\nwant:\n%s", name, got, want)
	}
}

func decode(t *testing.T, f []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	return p
}

func TestGratuitousARP(t *testing.T) {
	f := GratuitousARP(mac, vip4)
	golden(t, "garp", f)
	p := decode(t, f)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	a := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if !bytes.Equal(eth.DstMAC, broadcastMAC) || !bytes.Equal(eth.SrcMAC, mac) || a.Operation != layers.ARPRequest ||
		!bytes.Equal(a.SourceHwAddress, mac) || !bytes.Equal(a.SourceProtAddress, vip4.AsSlice()) ||
		!bytes.Equal(a.DstProtAddress, vip4.AsSlice()) || !bytes.Equal(a.DstHwAddress, make([]byte, 6)) {
		t.Errorf("gopacket reads %+v %+v", eth, a)
	}
}

func TestARPReplyAndRequest(t *testing.T) {
	reqIP := netip.MustParseAddr("198.18.30.1")
	// A request built by gopacket, as a router sends it.
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{},
		&layers.Ethernet{SrcMAC: peer, DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: peer, SourceProtAddress: reqIP.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: vip4.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	req, ok := ParseARPRequest(buf.Bytes())
	if !ok || !bytes.Equal(req.SenderMAC, peer) || req.SenderIP != reqIP || req.TargetIP != vip4 {
		t.Fatalf("parsed %+v %v", req, ok)
	}
	f := ARPReply(mac, vip4, req.SenderMAC, req.SenderIP)
	golden(t, "arp-reply", f)
	p := decode(t, f)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	a := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if !bytes.Equal(eth.DstMAC, peer) || a.Operation != layers.ARPReply || !bytes.Equal(a.SourceHwAddress, mac) ||
		!bytes.Equal(a.SourceProtAddress, vip4.AsSlice()) || !bytes.Equal(a.DstHwAddress, peer) ||
		!bytes.Equal(a.DstProtAddress, reqIP.AsSlice()) {
		t.Errorf("gopacket reads %+v %+v", eth, a)
	}
	// Not requests: a reply, a truncated frame, IPv4.
	for i, bad := range [][]byte{f, buf.Bytes()[:41], GratuitousARP(mac, vip4)[:20]} {
		if _, ok := ParseARPRequest(bad); ok {
			t.Errorf("case %d parsed as a request", i)
		}
	}
}

func checkNA(t *testing.T, f []byte, dstMAC net.HardwareAddr, src, dst netip.Addr, solicited bool) {
	t.Helper()
	p := decode(t, f)
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	ic := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if na == nil {
		t.Fatalf("gopacket finds no neighbour advertisement: %v", p)
	}
	if !bytes.Equal(eth.DstMAC, dstMAC) || !bytes.Equal(eth.SrcMAC, mac) || ip.HopLimit != 255 ||
		!ip.SrcIP.Equal(src.AsSlice()) || !ip.DstIP.Equal(dst.AsSlice()) || !na.TargetAddress.Equal(vip6.AsSlice()) ||
		!na.Override() || na.Solicited() != solicited || na.Router() {
		t.Errorf("gopacket reads %+v %+v %+v", eth, ip, na)
	}
	if len(na.Options) != 1 || na.Options[0].Type != layers.ICMPv6OptTargetAddress || !bytes.Equal(na.Options[0].Data, mac) {
		t.Errorf("options %+v", na.Options)
	}
	// The checksum, as gopacket computes it.
	want := ic.Checksum
	ic2 := *ic
	ic2.SetNetworkLayerForChecksum(ip)
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{ComputeChecksums: true}, &ic2, gopacket.Payload(ic.Payload)); err != nil {
		t.Fatal(err)
	}
	if got := uint16(b.Bytes()[2])<<8 | uint16(b.Bytes()[3]); got != want {
		t.Errorf("checksum %#04x, gopacket computes %#04x", want, got)
	}
}

func TestUnsolicitedNA(t *testing.T) {
	f := UnsolicitedNA(mac, ll, vip6)
	golden(t, "unsolicited-na", f)
	checkNA(t, f, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, ll, allNodes, false)
}

// nsFrame is a neighbour solicitation for target from src, built by gopacket.
func nsFrame(t *testing.T, src, dst, target netip.Addr, hop uint8) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: hop, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	ic.SetNetworkLayerForChecksum(ip)
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: target.AsSlice(),
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: peer}}}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
		&layers.Ethernet{SrcMAC: peer, DstMAC: multicastMAC(dst), EthernetType: layers.EthernetTypeIPv6}, ip, ic, ns)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSolicitedNA(t *testing.T) {
	f := nsFrame(t, router, SolicitedNode(vip6), vip6, 255)
	ns, ok := ParseNS(f)
	if !ok || ns.Source != router || ns.Target != vip6 || !bytes.Equal(ns.SenderMAC, peer) {
		t.Fatalf("parsed %+v %v", ns, ok)
	}
	if got := SolicitedNode(vip6).String(); got != "ff02::1:ff00:10" {
		t.Errorf("solicited-node group %s", got)
	}
	na := SolicitedNA(mac, ll, ns)
	golden(t, "solicited-na", na)
	checkNA(t, na, peer, ll, router, true)

	// Duplicate address detection: from ::, answered to all nodes.
	dad, ok := ParseNS(nsFrame(t, netip.IPv6Unspecified(), SolicitedNode(vip6), vip6, 255))
	if !ok {
		t.Fatal("DAD solicitation not parsed")
	}
	checkNA(t, SolicitedNA(mac, ll, dad), net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, ll, allNodes, false)

	// Not solicitations: forwarded (hop limit 64), a bad checksum, an
	// advertisement, truncated.
	bad := bytes.Clone(f)
	bad[len(bad)-1] ^= 1
	for i, b := range [][]byte{nsFrame(t, router, SolicitedNode(vip6), vip6, 64), bad, na, f[:60]} {
		if _, ok := ParseNS(b); ok {
			t.Errorf("case %d parsed as a solicitation", i)
		}
	}
	if !strings.HasPrefix(hex.EncodeToString(na[:6]), hex.EncodeToString(peer)) {
		t.Error("reply not sent to the soliciting MAC")
	}
}
