package encap_test

import (
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
)

func Example() {
	primary, err := encap.Compile(encap.Tunnel{
		Mode:   encap.GUE,
		SrcMAC: [6]byte{0x02, 0, 0, 0, 0, 1},
		DstMAC: [6]byte{0x02, 0, 0, 0, 0, 2},
		Src:    netip.MustParseAddr("198.18.0.1"),
		Dst:    netip.MustParseAddr("198.18.1.10"),
	})
	if err != nil {
		panic(err)
	}
	secondary, err := encap.Compile(encap.Tunnel{
		Mode: encap.GUE,
		Src:  netip.MustParseAddr("198.18.0.1"),
		Dst:  netip.MustParseAddr("198.18.1.11"),
	})
	if err != nil {
		panic(err)
	}

	// A received frame: 14 bytes of Ethernet, then a minimal IPv4 packet,
	// placed after enough headroom for the outer headers.
	const l3Off = 14
	headroom := primary.Headroom(l3Off, true)
	inner := []byte{0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 7, 198, 18, 100, 1}
	buf := make([]byte, headroom+l3Off+len(inner))
	l3 := headroom + l3Off
	copy(buf[l3:], inner)

	start := primary.Encap(buf, l3, len(buf), 4, 0x1234, secondary)
	fmt.Println("frame:", len(buf)-start, "bytes, overhead", primary.Overhead(true))

	// The backend agent's view: the UDP payload starts after Ethernet (14),
	// IPv4 (20) and UDP (8).
	var h encap.GUEHeader
	off, err := encap.DecodeGUE(buf[start+42:], &h)
	fmt.Println("inner at", off, "proto", h.Proto, "err", err)
	hop, ok := encap.AdvanceHop(buf[start+42:], &h)
	fmt.Println("second chance:", hop, ok)
	// Output:
	// frame: 78 bytes, overhead 58
	// inner at 16 proto 4 err <nil>
	// second chance: 198.18.1.11 true
}
