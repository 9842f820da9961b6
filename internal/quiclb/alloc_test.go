package quiclb

import "testing"

// benchConfigs are the decode cases of the alloc test and the benchmarks:
// each mode, and both four-pass server ID decoders.
var benchConfigs = []struct {
	name string
	cfg  Config
}{
	{"plaintext", Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6, LenSelfEncoded: true}},
	{"single-pass", Config{Rotation: 1, ServerIDLen: 4, NonceLen: 12, Key: appendixBKey, LenSelfEncoded: true}},
	{"four-pass-3", Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6, Key: appendixBKey, LenSelfEncoded: true}},
	{"four-pass-4", Config{Rotation: 1, ServerIDLen: 10, NonceLen: 5, Key: appendixBKey, LenSelfEncoded: true}},
}

// TestZeroAllocs proves that no decoder allocates, on success or on any
// error, in any mode, with the server ID and CID buffers on the stack;
// and that Encode does not allocate when dst has room.
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers")
	}
	for _, bc := range benchConfigs {
		t.Run(bc.name, func(t *testing.T) {
			c, err := New(bc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			set, err := NewSet(c)
			if err != nil {
				t.Fatal(err)
			}
			good, err := c.Encode(nil, make([]byte, bc.cfg.ServerIDLen), make([]byte, bc.cfg.NonceLen))
			if err != nil {
				t.Fatal(err)
			}
			cids := [][]byte{good, nil, {0xff, 1, 2}, {0x00, 1, 2}, good[:3], append([]byte{good[0] &^ 0x1f}, good[1:]...)}
			sid := make([]byte, bc.cfg.ServerIDLen)
			nonce := make([]byte, bc.cfg.NonceLen)
			var sink int
			allocs := testing.AllocsPerRun(200, func() {
				for _, cid := range cids {
					var out [MaxServerIDLen]byte // must stay on the stack
					n, _ := c.Decode(cid, out[:])
					sink += n + int(out[0])
					s, _ := c.DecodeServerID(cid)
					v, _ := s.Uint64()
					sink += s.Len() + int(v)
					s, _ = set.DecodeServerID(cid)
					sink += s.Len()
					var n2 [MaxBlockLen]byte
					if c.DecodeFull(cid, out[:], n2[:]) == nil {
						sink++
					}
				}
			})
			if allocs != 0 {
				t.Errorf("decoders: %v allocations per run, want 0", allocs)
			}
			buf := make([]byte, 0, MaxCIDLen)
			allocs = testing.AllocsPerRun(200, func() {
				cid, _ := c.Encode(buf[:0], sid, nonce)
				sink += len(cid)
			})
			if allocs != 0 {
				t.Errorf("Encode with capacity: %v allocations per run, want 0", allocs)
			}
			_ = sink
		})
	}
}
