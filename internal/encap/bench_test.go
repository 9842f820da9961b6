package encap

import "testing"

// benchInner returns an inner IP packet of n bytes with a valid version
// nibble and a DSCP/ECN value (contents beyond that do not matter to Encap).
func benchInner(version uint8, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 13)
	}
	b[0] = version << 4
	b[1] = testTOS
	return b
}

func BenchmarkEncap(b *testing.B) {
	g4 := mustCompile(b, Tunnel{Mode: GUE, Src: lb4, Dst: be4})
	g4sec := mustCompile(b, Tunnel{Mode: GUE, Src: lb4, Dst: be4b})
	g4c := mustCompile(b, Tunnel{Mode: GUE, Src: lb4, Dst: be4, UDPChecksum: true})
	g6 := mustCompile(b, Tunnel{Mode: GUE, Src: lb6, Dst: be6}) // checksum on
	g6sec := mustCompile(b, Tunnel{Mode: GUE, Src: lb6, Dst: be6b})
	g6z := mustCompile(b, Tunnel{Mode: GUE, Src: lb6, Dst: be6, ZeroUDP6Checksum: true})
	i4 := mustCompile(b, Tunnel{Mode: IPIP, Src: lb4, Dst: be4})
	i6 := mustCompile(b, Tunnel{Mode: IPIP, Src: lb6, Dst: be6, VLAN: 100})
	for _, bc := range []struct {
		name    string
		tp, sec *Template
		version uint8
		size    int
	}{
		{"gue4-v4inner", g4, nil, 4, 64},
		{"gue4-v4inner-csum", g4c, nil, 4, 64},
		{"gue6-v6inner", g6, nil, 6, 80},
		{"gue6-v6inner-1400", g6, nil, 6, 1400},
		{"gue6-v6inner-nocsum", g6z, nil, 6, 80},
		{"gue4-hops", g4, g4sec, 4, 64},
		{"gue6-hops", g6, g6sec, 6, 80},
		{"ipip4", i4, nil, 4, 64},
		{"ipip6-vlan", i6, nil, 6, 80},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const l3 = 128 // a frame received at offset 128-14 with 114 bytes of headroom
			buf := make([]byte, l3+bc.size)
			copy(buf[l3:], benchInner(bc.version, bc.size))
			end := len(buf)
			var hash uint64 = 0x243f6a8885a308d3
			b.ReportAllocs()
			for b.Loop() {
				hash++
				if bc.tp.Encap(buf, l3, end, bc.version, hash, bc.sec) < 0 {
					b.Fatal("Encap failed")
				}
			}
		})
	}
}

func BenchmarkDecodeGUE(b *testing.B) {
	pl := append(gueHeaderBytes(false, 4, 0, hopBytes(1, 2, be4, be4b)), benchInner(4, 40)...)
	var h GUEHeader
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeGUE(pl, &h); err != nil {
			b.Fatal(err)
		}
	}
}
