//go:build linux

package afpacket

import (
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Classic BPF opcodes used by the destination filter (linux/filter.h).
const (
	opLdhAbs = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS // A = be16(pkt[k])
	opLdInd  = unix.BPF_LD | unix.BPF_W | unix.BPF_IND // A = be32(pkt[X+k])
	opLdxImm = unix.BPF_LDX | unix.BPF_W | unix.BPF_IMM
	opJeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K // pc += (A == k) ? jt : jf
	opJa     = unix.BPF_JMP | unix.BPF_JA               // pc += k
	opRetK   = unix.BPF_RET | unix.BPF_K                // return k bytes of the packet (0 = drop)
)

const (
	verdictDrop   = 0
	verdictAccept = math.MaxUint32 // the whole frame
)

// Offsets in an Ethernet frame as the packet socket's filter sees it.
const (
	offEtherType     = 12 // untagged, or after the kernel moved the tag to metadata
	offInnerType     = 16 // behind one 802.1Q / 802.1ad tag left in the data
	l3Untagged       = 14
	l3Tagged         = 18
	offIPv4Dst       = 16 // from the start of the IPv4 header
	offIPv6Dst       = 24 // from the start of the IPv6 header
	etherTypeIPv4    = 0x0800
	etherTypeIPv6    = 0x86dd
	etherType8021Q   = unix.ETH_P_8021Q
	etherType8021AD  = unix.ETH_P_8021AD
	ipv4InsnsPerAddr = 2 // jeq, ret
	ipv6InsnsPerAddr = 9 // 4 x (ld, jeq), ret
)

// filterProgram assembles a classic BPF socket filter that accepts exactly
// the IPv4 and IPv6 frames whose destination address is in dsts, untagged or
// with one VLAN tag (802.1Q or 802.1ad) in the frame data. An empty dsts
// gives a program that accepts nothing.
//
// The kernel moves the outermost VLAN tag of a received frame into packet
// metadata before packet sockets see it, so the filter reads a tagged frame's
// own EtherType at offset 12; the in-data tag case covers the inner tag of a
// double-tagged frame. Loads past the end of a short frame make the kernel
// return 0, which drops it.
//
// Layout, with X holding the offset of the IP header:
//
//	 0  ldh [12]
//	 1  jeq #0x8100      jt 3          (tag in data)
//	 2  jeq #0x88a8      jt 2 jf 0
//	 3  ldx #14
//	 4  ja  l3
//	 5  ldh [16]                       (tagged: inner EtherType)
//	 6  ldx #18
//	l3: jeq #0x0800      jt 0 jf 1
//	    ja  v4
//	    jeq #0x86dd      jt 0 jf 1
//	    ja  v6
//	    ret #0
//	v4: ld [x+16]; per address: jeq #addr jt 0 jf 1; ret #accept ...; ret #0
//	v6: per address: ld [x+24]; jeq w0 jf next; ... ld [x+36]; jeq w3 jf next; ret #accept ...; ret #0
func filterProgram(dsts []netip.Addr) ([]unix.SockFilter, error) {
	var v4 []netip.Addr
	var v6 []netip.Addr
	seen := make(map[netip.Addr]bool, len(dsts))
	for _, a := range dsts {
		if !a.IsValid() {
			return nil, fmt.Errorf("afpacket: filter: invalid address %v", a)
		}
		a = a.Unmap().WithZone("")
		if seen[a] {
			continue
		}
		seen[a] = true
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if len(v4) == 0 && len(v6) == 0 {
		return []unix.SockFilter{{Code: opRetK, K: verdictDrop}}, nil
	}
	const head = 12 // instructions before the v4 block
	size := head + 1 + ipv4InsnsPerAddr*len(v4) + 1 + ipv6InsnsPerAddr*len(v6) + 1
	if size > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("afpacket: filter: %d addresses (%d IPv4, %d IPv6) need %d instructions, more than the kernel's %d",
			len(v4)+len(v6), len(v4), len(v6), size, unix.BPF_MAXINSNS)
	}
	p := make([]unix.SockFilter, 0, size)
	ins := func(code uint16, jt, jf uint8, k uint32) {
		p = append(p, unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k})
	}
	v4Start := head
	v6Start := head + 1 + ipv4InsnsPerAddr*len(v4) + 1
	ins(opLdhAbs, 0, 0, offEtherType)       // 0
	ins(opJeqK, 3, 0, etherType8021Q)       // 1 -> 5
	ins(opJeqK, 2, 0, etherType8021AD)      // 2 -> 5
	ins(opLdxImm, 0, 0, l3Untagged)         // 3
	ins(opJa, 0, 0, 2)                      // 4 -> 7
	ins(opLdhAbs, 0, 0, offInnerType)       // 5
	ins(opLdxImm, 0, 0, l3Tagged)           // 6
	ins(opJeqK, 0, 1, etherTypeIPv4)        // 7
	ins(opJa, 0, 0, uint32(v4Start-(8+1)))  // 8 -> v4
	ins(opJeqK, 0, 1, etherTypeIPv6)        // 9
	ins(opJa, 0, 0, uint32(v6Start-(10+1))) // 10 -> v6
	ins(opRetK, 0, 0, verdictDrop)          // 11
	ins(opLdInd, 0, 0, offIPv4Dst)          // v4
	for _, a := range v4 {
		b := a.As4()
		ins(opJeqK, 0, 1, be32(b[:]))
		ins(opRetK, 0, 0, verdictAccept)
	}
	ins(opRetK, 0, 0, verdictDrop)
	for _, a := range v6 {
		b := a.As16()
		for w := 0; w < 4; w++ {
			ins(opLdInd, 0, 0, uint32(offIPv6Dst+4*w))
			// On a mismatch skip the rest of this address's block: the
			// remaining (ld, jeq) pairs and the ret.
			ins(opJeqK, 0, uint8(2*(3-w)+1), be32(b[4*w:]))
		}
		ins(opRetK, 0, 0, verdictAccept)
	}
	ins(opRetK, 0, 0, verdictDrop)
	if len(p) != size {
		panic(fmt.Sprintf("afpacket: filter program has %d instructions, planned %d", len(p), size))
	}
	return p, nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
