package encap_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/sluicelb/sluice/internal/encap"
)

// A full-NAT flow: the client's packet goes to the backend from the SNAT
// address, the backend's reply goes back to the client from the VIP.
func ExampleNATTemplate_Forward() {
	toBackend, err := encap.CompileNAT(encap.NAT{
		L2:      encap.L2{SrcMAC: [6]byte{0x02, 0, 0, 0, 0, 1}, DstMAC: [6]byte{0x02, 0, 0, 0, 0, 2}},
		SNAT:    netip.MustParseAddr("198.18.30.11"),
		Backend: netip.MustParseAddrPort("198.18.30.101:8080"),
	})
	if err != nil {
		panic(err)
	}
	toClient := encap.CompileL2(encap.L2{SrcMAC: [6]byte{0x02, 0, 0, 0, 0, 1}, DstMAC: [6]byte{0x02, 0, 0, 0, 0, 0xfe}})

	// A received frame: Ethernet, IPv4 203.0.113.7 -> 198.18.0.10, UDP
	// 40000 -> 53 without a checksum.
	frame := []byte{
		0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x08, 0x00,
		0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0, 203, 0, 113, 7, 198, 18, 0, 10,
		0x9c, 0x40, 0, 53, 0, 9, 0, 0, 'q',
	}
	const l3, l4 = 14, 34
	ip := frame[l3:]
	binary.BigEndian.PutUint16(ip[10:], encap.Checksum(ip[:20], 0))

	show := func(start int) {
		ip := frame[l3:]
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(ip[20:]))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(ip[22:]))
		fmt.Printf("%v -> %v, header checksum ok %v, frame at %d to %x\n",
			src, dst, encap.Checksum(ip[:20], 0) == 0, start, frame[start:start+6])
	}
	const snatPort = 20001 // from the worker's nat.Pool
	show(toBackend.Forward(frame, l3, l4, len(frame), 17, snatPort))

	// The reply B:bp -> S:sp (here the same bytes with the roles swapped)
	// is rewritten to VIP:vp -> C:cp.
	reply := encap.MakeNATTuple(netip.MustParseAddrPort("198.18.0.10:53"), netip.MustParseAddrPort("203.0.113.7:40000"))
	show(toClient.NAT(frame, l3, l4, len(frame), 17, &reply))
	// Output:
	// 198.18.30.11:20001 -> 198.18.30.101:8080, header checksum ok true, frame at 0 to 020000000002
	// 198.18.0.10:53 -> 203.0.113.7:40000, header checksum ok true, frame at 0 to 0200000000fe
}
