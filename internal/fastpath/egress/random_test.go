package egress

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/encap"
)

// TestRandomFrames runs the program on frames of installed flows mutated
// at random (truncated, header bytes flipped, trailing bytes, lengths and
// flags changed): the verdict is always TC_ACT_OK, a frame comes out either
// unchanged or encapsulated, and only a well-formed frame of an installed
// flow is encapsulated, exactly as encap.Template.Encap does.
func TestRandomFrames(t *testing.T) {
	p := loadT(t)
	rng := rand.New(rand.NewPCG(1, 2))
	type inst struct {
		tgt Target
		h   uint64
	}
	installed := map[Flow]inst{}
	var bases [][]byte
	for i := range 32 {
		proto := uint8(unix.IPPROTO_TCP)
		if i%2 == 1 {
			proto = unix.IPPROTO_UDP
		}
		c, v, b := client4, vip4, back4
		if i%4 >= 2 {
			c, v, b = client6, vip6, back6
		}
		sport := uint16(2000 + i)
		h := uint64(sport) * 0x9e3779b97f4a7c15
		tgt := Target{Backend: b, Port: 6080, SrcPort: encap.SrcPort(h), FlowLabel: encap.FlowLabel(h), UDPChecksum: i%8 < 4}
		f := flowOf(proto, c, v, sport, 80)
		if err := p.Put(f, tgt); err != nil {
			t.Fatal(err)
		}
		installed[f] = inst{tgt, h}
		bases = append(bases, l4Frame(proto, c, v, sport, 80, tcpACK, uint8(i), make([]byte, rng.IntN(300))))
	}
	counts := map[string]int{}
	for range 20000 {
		f := slices.Clone(bases[rng.IntN(len(bases))])
		switch rng.IntN(5) {
		case 0: // truncate
			f = f[:rng.IntN(len(f)+1)]
		case 1, 2: // flip bytes in the headers
			for range 1 + rng.IntN(3) {
				f[rng.IntN(min(len(f), 14+40+20))] ^= byte(1 + rng.IntN(255))
			}
		case 3: // trailing bytes
			f = append(f, make([]byte, 1+rng.IntN(20))...)
		}
		opts := &ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)}
		ret, err := p.objs.SluiceEgress.Run(opts)
		if err != nil {
			// The kernel refuses frames shorter than Ethernet, or than
			// the IP header their EtherType announces.
			if len(f) < 14+40 {
				counts["refused"]++
				continue
			}
			t.Fatalf("%v: %x", err, f)
		}
		out := opts.DataOut
		if ret != tcActOK {
			t.Fatalf("verdict %d for %x", ret, f)
		}
		if bytes.Equal(out, f) {
			counts["untouched"]++
			continue
		}
		counts["direct"]++
		// Encapsulated: a well-formed frame of an installed flow.
		flow, ok := parseFlow(f)
		if !ok {
			t.Fatalf("encapsulated a frame that is not well-formed: %x", f)
		}
		in, ok := installed[flow]
		if !ok {
			t.Fatalf("encapsulated a frame of no installed flow: %x", f)
		}
		want := goEncap(t, f, flow.Client.Addr(), in.tgt, in.h)
		got := out
		if len(got) == len(want) && !l4ChecksumOK(f[14:]) {
			// A corrupt segment: the outer checksum is derived from the
			// inner one, so it is wrong too (the backend drops the
			// packet, as its TCP or UDP would); the rest is the same.
			o := 14 + 20 + 6
			if flow.Client.Addr().Is6() {
				o = 14 + 40 + 6
			}
			got, want = slices.Clone(got), slices.Clone(want)
			got[o], got[o+1], want[o], want[o+1] = 0, 0, 0, 0
		}
		if len(got) != len(want) || !bytes.Equal(got[14:], want[14:]) {
			t.Fatalf("frame %x:\n got %x\nwant %x", f, got, want)
		}
	}
	t.Logf("%v", counts)
	if counts["direct"] == 0 || counts["untouched"] == 0 {
		t.Errorf("mutations too weak or too strong: %v", counts)
	}
}

// parseFlow parses a frame as the program must: untagged Ethernet, IPv4
// without options and not a fragment or IPv6 without extension headers,
// TCP (at least 20 bytes) or UDP (length matching), IP length = frame
// length.
func parseFlow(f []byte) (Flow, bool) {
	if len(f) < 14 {
		return Flow{}, false
	}
	ip := f[14:]
	var proto uint8
	var src, dst netip.Addr
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case unix.ETH_P_IP:
		if len(ip) < 20 || ip[0] != 0x45 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 ||
			int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
			return Flow{}, false
		}
		proto = ip[9]
		src, _ = netip.AddrFromSlice(ip[12:16])
		dst, _ = netip.AddrFromSlice(ip[16:20])
		l4 = ip[20:]
	case unix.ETH_P_IPV6:
		if len(ip) < 40 || ip[0]>>4 != 6 || 40+int(binary.BigEndian.Uint16(ip[4:])) != len(ip) {
			return Flow{}, false
		}
		proto = ip[6]
		src, _ = netip.AddrFromSlice(ip[8:24])
		dst, _ = netip.AddrFromSlice(ip[24:40])
		l4 = ip[40:]
	default:
		return Flow{}, false
	}
	switch {
	case proto == unix.IPPROTO_TCP && len(l4) >= 20:
	case proto == unix.IPPROTO_UDP && len(l4) >= 8 && int(binary.BigEndian.Uint16(l4[4:])) == len(l4):
	default:
		return Flow{}, false
	}
	return flowOf(proto, src, dst, binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])), true
}

// l4ChecksumOK reports whether the TCP or UDP checksum of the IP packet p
// (no options, no extension headers) is right (a UDP checksum 0 is).
func l4ChecksumOK(p []byte) bool {
	var pseudo, l4 []byte
	var proto byte
	if p[0]>>4 == 4 {
		l4, proto = p[20:], p[9]
		pseudo = append(append([]byte{}, p[12:20]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	} else {
		l4, proto = p[40:], p[6]
		pseudo = append(append([]byte{}, p[8:40]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
	}
	if proto == unix.IPPROTO_UDP && l4[6] == 0 && l4[7] == 0 {
		return true
	}
	return csum(uint32(csum(0, pseudo)), l4) == 0xffff
}
