//go:build linux

package afpacket_test

import (
	"errors"
	"log"
	"net/netip"

	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/afpacket"
)

// A worker loop over an AF_PACKET link: receive a batch, decide per frame,
// send what is forwarded and release the rest. (Not run: it needs root and
// an interface.)
func Example() {
	l, err := afpacket.New("eth0", afpacket.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	// Only frames to the VIPs cross into user space.
	if err := l.SetFilter([]netip.Addr{netip.MustParseAddr("198.18.1.10")}); err != nil {
		log.Fatal(err)
	}
	frames := make([]link.Frame, l.BatchSize())
	tx := make([]link.Frame, 0, l.BatchSize())
	drop := make([]link.Frame, 0, l.BatchSize())
	for {
		n, err := l.Recv(frames)
		if errors.Is(err, link.ErrClosed) {
			return
		}
		if err != nil {
			log.Fatal(err)
		}
		tx, drop = tx[:0], drop[:0]
		for _, f := range frames[:n] {
			if f.Len < 14 {
				drop = append(drop, f)
				continue
			}
			// Rewrite f.Bytes() in place, or prepend headers by lowering
			// f.Off (at most to 0) and raising f.Len.
			tx = append(tx, f)
		}
		l.Release(drop)
		l.Send(tx)
	}
}
