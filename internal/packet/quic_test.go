package packet

import (
	"bytes"
	"testing"
)

func TestQUICDestCID(t *testing.T) {
	cid := []byte{0x41, 1, 2, 3, 4, 5, 6, 7, 8}
	long := append([]byte{0xc3, 0, 0, 0, 1, byte(len(cid))}, cid...)
	long = append(long, 4, 9, 9, 9, 9, 0xaa) // SCID and the rest
	short := append([]byte{0x43}, cid...)
	short = append(short, 0xaa, 0xbb)
	for _, tc := range []struct {
		name     string
		b        []byte
		shortLen int
		want     []byte
		long, ok bool
		version  uint32
	}{
		{"long", long, 3, cid, true, true, 1},
		{"long zero-length dcid", []byte{0x80, 0xff, 0, 0, 1, 0}, 9, []byte{}, true, true, 0xff000001},
		{"long truncated in dcid", long[:10], 9, nil, true, false, 1},
		{"long truncated before dcid length", long[:5], 9, nil, true, false, 1},
		{"long truncated before version", long[:3], 9, nil, true, false, 0},
		{"short", short, len(cid), cid, false, true, 0},
		{"short zero-length", short, 0, []byte{}, false, true, 0},
		{"short too short", short[:5], len(cid), nil, false, false, 0},
		{"short negative length", short, -1, nil, false, false, 0},
		{"empty", nil, 9, nil, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, isLong, ok := QUIC(tc.b).DestCID(tc.shortLen)
			if ok != tc.ok || isLong != tc.long || !bytes.Equal(got, tc.want) {
				t.Fatalf("DestCID = %x, long %v, ok %v; want %x, %v, %v", got, isLong, ok, tc.want, tc.long, tc.ok)
			}
			if v := QUIC(tc.b).Version(); v != tc.version {
				t.Fatalf("Version = %#x, want %#x", v, tc.version)
			}
			if QUIC(tc.b).IsLong() != (len(tc.b) > 0 && tc.long) {
				t.Fatalf("IsLong = %v", QUIC(tc.b).IsLong())
			}
		})
	}
}

func TestQUICDestCIDZeroAllocs(t *testing.T) {
	long := []byte{0xc0, 0, 0, 0, 1, 4, 1, 2, 3, 4, 0}
	short := []byte{0x40, 1, 2, 3, 4, 5}
	var sink int
	if n := testing.AllocsPerRun(100, func() {
		for _, b := range [][]byte{long, short, nil, long[:4]} {
			d, l, ok := QUIC(b).DestCID(4)
			sink += len(d) + int(QUIC(b).Version())
			if l || ok {
				sink++
			}
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
	_ = sink
}

func FuzzQUICDestCID(f *testing.F) {
	f.Add([]byte{0xc0, 0, 0, 0, 1, 4, 1, 2, 3, 4, 0}, 4)
	f.Add([]byte{0x40, 1, 2, 3, 4, 5}, 9)
	f.Fuzz(func(t *testing.T, b []byte, shortLen int) {
		d, long, ok := QUIC(b).DestCID(shortLen)
		if !ok {
			return
		}
		switch {
		case long && (b[0]&0x80 == 0 || len(d) != int(b[5]) || !bytes.Equal(d, b[6:6+len(d)])):
			t.Fatalf("long header %x: dcid %x", b, d)
		case !long && (b[0]&0x80 != 0 || len(d) != shortLen || !bytes.Equal(d, b[1:1+shortLen])):
			t.Fatalf("short header %x: dcid %x", b, d)
		}
	})
}
