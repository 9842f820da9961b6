package packet_test

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/internal/packet"
)

func ExampleParsed_Decode() {
	// A TCP SYN from 192.0.2.1:40000 to 198.51.100.2:443 in VLAN 10.
	frame, _ := hex.DecodeString(strings.Join([]string{
		"020000000001", "020000000002", "8100", "000a", "0800", // Ethernet, 802.1Q tag, IPv4
		"45000028123440004006", "0000", "c0000201", "c6336402", // IPv4: 40 octets, DF, TTL 64, TCP
		"9c4001bb", "000003e8", "00000000", "5002ffff", "00000000", // TCP: SYN, no options
	}, ""))

	var p packet.Parsed // reused for every frame in real code
	p.Decode(frame)
	if p.Verdict != packet.OK {
		fmt.Println("drop:", p.Verdict)
		return
	}
	fmt.Println(p.Tuple.SrcAddr(), p.Tuple.SrcPort, "->", p.Tuple.DstAddr(), p.Tuple.DstPort)
	fmt.Println("vlan", packet.VLANID(p.VLANs[0]), "syn", p.IsTCPSYN(), "payload at", p.PayloadOff)

	p.Decode(frame[:20])
	fmt.Println("cut short:", p.Verdict)
	// Output:
	// 192.0.2.1 40000 -> 198.51.100.2 443
	// vlan 10 syn true payload at 58
	// cut short: truncated
}
