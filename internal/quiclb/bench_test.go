package quiclb

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// benchCIDs returns 256 CIDs of c with random server IDs and nonces, so
// that a benchmark does not decode one CID over and over.
func benchCIDs(b *testing.B, c *Codec) [][]byte {
	rng := rand.New(rand.NewChaCha8([32]byte{'b'}))
	cids := make([][]byte, 256)
	for i := range cids {
		cfg := c.Config()
		cid, err := c.Encode(nil, fill(rng, make([]byte, cfg.ServerIDLen)), fill(rng, make([]byte, cfg.NonceLen)))
		if err != nil {
			b.Fatal(err)
		}
		cids[i] = cid
	}
	return cids
}

// BenchmarkDecode measures Decode per mode: plaintext, single-pass AES,
// four-pass with a server ID in the left half (three AES passes) and
// four-pass with a longer server ID (four passes). Where the thread's CPU
// time can be read it is reported as cpu-ns/op next to the wall-clock
// ns/op, which on a shared machine also counts other processes' turns.
func BenchmarkDecode(b *testing.B) {
	for _, bc := range benchConfigs {
		b.Run(bc.name, func(b *testing.B) {
			c, err := New(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			cids := benchCIDs(b, c)
			var sid [MaxServerIDLen]byte
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			c0, ok := threadCPU()
			i := 0
			for b.Loop() {
				if _, err := c.Decode(cids[i&255], sid[:]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if c1, ok1 := threadCPU(); ok && ok1 {
				b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// BenchmarkDecodeParallel is BenchmarkDecode on every core at once, as the
// datapath's workers share one Codec.
func BenchmarkDecodeParallel(b *testing.B) {
	for _, bc := range benchConfigs {
		b.Run(bc.name, func(b *testing.B) {
			c, err := New(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			cids := benchCIDs(b, c)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var sid [MaxServerIDLen]byte
				i := 0
				for pb.Next() {
					if _, err := c.Decode(cids[i&255], sid[:]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}

// BenchmarkEncode measures Encode per mode into a buffer with room.
func BenchmarkEncode(b *testing.B) {
	for _, bc := range benchConfigs {
		b.Run(bc.name, func(b *testing.B) {
			c, err := New(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			sid := make([]byte, bc.cfg.ServerIDLen)
			nonce := make([]byte, bc.cfg.NonceLen)
			buf := make([]byte, 0, MaxCIDLen)
			b.ReportAllocs()
			for b.Loop() {
				nonce[0]++
				if _, err := c.Encode(buf[:0], sid, nonce); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
