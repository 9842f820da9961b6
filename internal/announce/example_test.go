package announce_test

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/internal/announce"
)

// A node announcing two VIPs to its top-of-rack router, with BFD. The
// control plane calls Set again whenever the set of healthy VIPs changes.
func Example() {
	s, err := announce.New(announce.Config{
		ASN:      65010,
		RouterID: netip.MustParseAddr("192.0.2.10"),
		Peers: []announce.Peer{{
			Address: netip.MustParseAddr("192.0.2.1"),
			ASN:     65001,
			BFD:     &announce.BFD{MinRx: 100 * time.Millisecond, MinTx: 100 * time.Millisecond, Multiplier: 3},
		}},
		Communities: []string{"65010:100"},
		NextHop6:    netip.MustParseAddr("2001:db8::10"), // IPv6 VIPs over the IPv4 session
	}, slog.Default())
	if err != nil {
		panic(err)
	}
	if err := s.Set([]netip.Prefix{
		netip.MustParsePrefix("198.51.100.1/32"),
		netip.MustParsePrefix("2001:db8:100::1/128"),
	}); err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	go s.Run(ctx) // withdraws everything and closes the sessions when ctx ends
	// ... s.Peers() for the admin API ...
	stop()
}
