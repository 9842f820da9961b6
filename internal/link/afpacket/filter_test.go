//go:build linux

package afpacket

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// runBPF interprets the subset of classic BPF that filterProgram emits, with
// the kernel's semantics: a load past the end of the packet returns 0.
func runBPF(t *testing.T, prog []unix.SockFilter, pkt []byte) uint32 {
	var a, x uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case opLdhAbs:
			k := int(in.K)
			if k+2 > len(pkt) {
				return 0
			}
			a = uint32(binary.BigEndian.Uint16(pkt[k:]))
		case opLdInd:
			k := int(x) + int(in.K)
			if k+4 > len(pkt) {
				return 0
			}
			a = binary.BigEndian.Uint32(pkt[k:])
		case opLdxImm:
			x = in.K
		case opJeqK:
			if a == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case opJa:
			pc += int(in.K)
		case opRetK:
			return in.K
		default:
			t.Fatalf("pc %d: unexpected opcode %#x", pc, in.Code)
		}
	}
	t.Fatalf("program fell off its end")
	return 0
}

// checkProgram applies the kernel's static checks (bpf_check_classic): every
// jump lands inside the program and the program ends with a return.
func checkProgram(t *testing.T, prog []unix.SockFilter) {
	t.Helper()
	if len(prog) == 0 || len(prog) > unix.BPF_MAXINSNS {
		t.Fatalf("program length %d", len(prog))
	}
	if prog[len(prog)-1].Code != opRetK {
		t.Fatalf("program does not end with ret")
	}
	for pc, in := range prog {
		var targets []int
		switch in.Code {
		case opJeqK:
			targets = []int{pc + 1 + int(in.Jt), pc + 1 + int(in.Jf)}
		case opJa:
			targets = []int{pc + 1 + int(in.K)}
		}
		for _, tg := range targets {
			if tg >= len(prog) {
				t.Fatalf("pc %d jumps to %d, past the end (%d)", pc, tg, len(prog))
			}
		}
	}
}

// modelAccepts is the filter's specification, written plainly.
func modelAccepts(pkt []byte, set map[netip.Addr]bool) bool {
	if len(pkt) < 14 {
		return false
	}
	et, l3 := binary.BigEndian.Uint16(pkt[12:]), 14
	if et == 0x8100 || et == 0x88a8 {
		if len(pkt) < 18 {
			return false
		}
		et, l3 = binary.BigEndian.Uint16(pkt[16:]), 18
	}
	switch et {
	case 0x0800:
		if len(pkt) < l3+20 {
			return false
		}
		return set[netip.AddrFrom4([4]byte(pkt[l3+16:]))]
	case 0x86dd:
		if len(pkt) < l3+40 {
			return false
		}
		return set[netip.AddrFrom16([16]byte(pkt[l3+24:]))]
	}
	return false
}

func TestFilterProgramMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addrSets := [][]netip.Addr{
		nil,
		{netip.MustParseAddr("198.18.0.10")},
		{netip.MustParseAddr("2001:db8::10")},
		{netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.11"),
			netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8::1:10"),
			netip.MustParseAddr("2001:db8:0:1::10")},
	}
	// A large set: 300 IPv4 and 300 IPv6 addresses puts the v6 block far
	// beyond an 8-bit jump.
	var big []netip.Addr
	for i := range 300 {
		big = append(big, netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}))
		big = append(big, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i), 14: byte(i >> 8)}))
	}
	addrSets = append(addrSets, big)

	for _, dsts := range addrSets {
		prog, err := filterProgram(dsts)
		if err != nil {
			t.Fatal(err)
		}
		checkProgram(t, prog)
		set := make(map[netip.Addr]bool)
		for _, a := range dsts {
			set[a] = true
		}
		pick := func() netip.Addr {
			if len(dsts) > 0 && rng.IntN(2) == 0 {
				a := dsts[rng.IntN(len(dsts))]
				if rng.IntN(3) == 0 { // a near miss: one bit off
					b := a.AsSlice()
					b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
					a, _ = netip.AddrFromSlice(b)
				}
				return a
			}
			if rng.IntN(2) == 0 {
				return netip.AddrFrom4([4]byte{198, 18, 0, byte(rng.IntN(256))})
			}
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(256))})
		}
		types := []uint16{0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x9100, uint16(rng.Uint32())}
		accepted := 0
		for range 20000 {
			dst := pick()
			var pkt []byte
			// Ethernet header with a random EtherType, maybe a tag.
			pkt = append(pkt, make([]byte, 12)...)
			outer := types[rng.IntN(len(types))]
			if outer == 0x8100 || outer == 0x88a8 {
				pkt = binary.BigEndian.AppendUint16(pkt, outer)
				pkt = binary.BigEndian.AppendUint16(pkt, uint16(rng.IntN(4096)))
			}
			et := uint16(0x0800)
			if dst.Is6() {
				et = 0x86dd
			}
			if rng.IntN(8) == 0 {
				et = types[rng.IntN(len(types))]
			}
			pkt = binary.BigEndian.AppendUint16(pkt, et)
			ip := make([]byte, 40)
			for i := range ip {
				ip[i] = byte(rng.Uint32())
			}
			if dst.Is4() {
				b := dst.As4()
				copy(ip[16:], b[:])
				ip = ip[:20]
			} else {
				b := dst.As16()
				copy(ip[24:], b[:])
			}
			pkt = append(pkt, ip...)
			if rng.IntN(6) == 0 { // truncated somewhere
				pkt = pkt[:rng.IntN(len(pkt)+1)]
			}
			got := runBPF(t, prog, pkt) != 0
			if want := modelAccepts(pkt, set); got != want {
				t.Fatalf("dsts %v: frame %x: filter accepts=%v, model %v", dsts, pkt, got, want)
			}
			if got {
				accepted++
			}
		}
		if len(dsts) > 0 && accepted == 0 {
			t.Errorf("dsts %v: no random frame was accepted; the test does not exercise the match", dsts)
		}
		t.Logf("%d addresses: %d instructions, %d/20000 accepted", len(dsts), len(prog), accepted)
	}
}

func TestFilterProgramAddresses(t *testing.T) {
	if _, err := filterProgram([]netip.Addr{{}}); err == nil {
		t.Error("zero netip.Addr accepted")
	}
	// A mapped address is the IPv4 address; duplicates and zones collapse.
	p1, err := filterProgram([]netip.Addr{netip.MustParseAddr("::ffff:198.18.0.1"), netip.MustParseAddr("198.18.0.1"),
		netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fe80::1")})
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := filterProgram([]netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("fe80::1")})
	if len(p1) != len(p2) {
		t.Errorf("mapped/duplicate/zoned addresses not folded: %d vs %d instructions", len(p1), len(p2))
	}
	var many []netip.Addr
	for i := range 600 {
		many = append(many, netip.AddrFrom16([16]byte{0x20, 0x01, 14: byte(i >> 8), 15: byte(i)}))
	}
	if _, err := filterProgram(many); err == nil || !strings.Contains(err.Error(), "instructions") {
		t.Errorf("600 IPv6 addresses: err = %v, want too many instructions", err)
	}
}
