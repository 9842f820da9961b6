package egress

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	macA    = []byte{2, 0, 0, 0, 0, 0xa}
	macB    = []byte{2, 0, 0, 0, 0, 0xb}
	client4 = netip.MustParseAddr("198.18.1.10")
	client6 = netip.MustParseAddr("2001:db8:1::10")
	vip4    = netip.MustParseAddr("198.18.100.1")
	vip6    = netip.MustParseAddr("2001:db8:100::1")
	back4   = netip.MustParseAddr("198.18.50.7")
	back6   = netip.MustParseAddr("2001:db8:50::7")
)

const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
	tcpACK        = 0x10
	tcpFIN        = 0x01
	tcpRST        = 0x04
)

// requireBPF skips the test without root (loading BPF programs needs
// CAP_BPF and CAP_NET_ADMIN). BPF_PROG_TEST_RUN needs no namespace, so
// these tests also run with -short.
func requireBPF(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (BPF)")
	}
}

// loadT loads the program without attaching it, without fib lookups.
func loadT(tb testing.TB) *Program {
	tb.Helper()
	requireBPF(tb)
	p, err := load(options{flows: 1024, mtu: 1500, noFIB: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// csum adds b to the ones-complement sum s.
func csum(s uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// l4Frame builds an Ethernet/IPv4 or IPv6 frame carrying TCP (flags) or UDP
// with correct checksums and the traffic class tos.
func l4Frame(proto uint8, src, dst netip.Addr, sport, dport uint16, flags uint8, tos uint8, payload []byte) []byte {
	var l4 []byte
	if proto == unix.IPPROTO_TCP {
		l4 = make([]byte, 20+len(payload))
		binary.BigEndian.PutUint32(l4[4:], 12345)
		binary.BigEndian.PutUint32(l4[8:], 678)
		l4[12] = 5 << 4
		l4[13] = flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], payload)
	} else {
		l4 = make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], payload)
	}
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	ck := 16
	if proto == unix.IPPROTO_UDP {
		ck = 6
	}
	b := append(append([]byte{}, macB...), macA...)
	var pseudo []byte
	if src.Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0], ip[1] = 0x45, tos
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], 0x4000)
		ip[8], ip[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^csum(0, ip))
		pseudo = append(append(append([]byte{}, s[:]...), d[:]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
		ip := make([]byte, 40)
		binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(tos)<<20|0x12345)
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = proto, 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		pseudo = append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
		b = append(b, ip...)
	}
	c := ^csum(uint32(csum(0, pseudo)), l4)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[ck:], c)
	return append(b, l4...)
}

// flowOf is the Flow of a frame built by l4Frame.
func flowOf(proto uint8, src, dst netip.Addr, sport, dport uint16) Flow {
	return Flow{Proto: proto, Client: netip.AddrPortFrom(src, sport), VIP: netip.AddrPortFrom(dst, dport)}
}
