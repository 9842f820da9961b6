package announce

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelb/sluice/internal/fielderr"
)

// Defaults applied to zero fields.
const (
	DefaultPort          = 179
	DefaultHoldTime      = 9 * time.Second
	DefaultConnectRetry  = 5 * time.Second
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
)

// Timers of the stale-Cease workaround (see the package documentation).
const (
	// RecreateDelay is how long after a session left Established its peer
	// is re-created.
	RecreateDelay = time.Second
	// IdleHoldAfterReset is GoBGP's idle hold time after a reset: how long a
	// peer waits before it connects again. Longer than RecreateDelay.
	IdleHoldAfterReset = 2 * time.Second
)

// Limits checked by Validate.
const (
	MinHoldTime      = 3 * time.Second // RFC 4271: 0 or at least 3 s; 0 means the default here
	MaxHoldTime      = 65535 * time.Second
	MinBFDInterval   = 10 * time.Millisecond
	MaxBFDInterval   = time.Duration(1<<32-1) * time.Microsecond // a 32-bit field in µs
	MaxBFDMultiplier = 255
	maxConnectRetry  = 24 * time.Hour
)

// Config configures a Speaker. The zero values of optional fields select
// the defaults above.
type Config struct {
	// ASN is this node's autonomous system number (4-byte ASNs allowed).
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address unique among the
	// routers' peers (usually the node's IPv4 address).
	RouterID netip.Addr
	// ListenPort is the TCP port to accept sessions on, from every local
	// address. 0 or -1: do not listen, only connect out (GoBGP's own
	// zero means port 179, so 0 is passed to it as -1).
	ListenPort int32
	// Peers are the routers to announce to; at least one.
	Peers []Peer
	// Communities are attached to every route, in "ASN:value" form with
	// both halves in 0..65535 (RFC 1997), e.g. "65000:100".
	Communities []string
	// NextHop4 and NextHop6 are the next hops of IPv4 and IPv6 routes.
	// Unset: the local address of each session, which must then be of the
	// route's family (see the package documentation).
	NextHop4, NextHop6 netip.Addr
}

// Peer is one router.
type Peer struct {
	// Address is the router's address (IPv4 or IPv6, no zone).
	Address netip.Addr
	// ASN is the router's AS; equal to Config.ASN for iBGP.
	ASN uint32
	// Port is the router's BGP port (DefaultPort when 0).
	Port uint16
	// HoldTime is proposed in OPEN; the session uses the smaller of both
	// sides' values. Whole seconds, at least 3 s (DefaultHoldTime when 0).
	HoldTime time.Duration
	// KeepaliveTime is the keepalive interval, whole seconds, shorter than
	// HoldTime (HoldTime/3 when 0).
	KeepaliveTime time.Duration
	// ConnectRetry is the wait between connection attempts, whole seconds
	// (DefaultConnectRetry when 0).
	ConnectRetry time.Duration
	// BFD enables BFD for the session when not nil.
	BFD *BFD
	// Passive makes the Speaker wait for the router to connect instead of
	// connecting out; it needs Config.ListenPort.
	Passive bool
}

// BFD configures a peer's BFD session (RFC 5880 asynchronous mode). The
// local detection time is MinRx * Multiplier (or the router's transmit
// interval times its multiplier, if slower).
type BFD struct {
	// MinRx is the required minimum receive interval, MinTx the desired
	// minimum transmit interval; whole microseconds, at least 10 ms
	// (DefaultBFDInterval when 0).
	MinRx, MinTx time.Duration
	// Multiplier is the detection multiplier, 1..255 (DefaultBFDMultiplier
	// when 0).
	Multiplier int
}

// ErrConfig is matched (errors.Is) by every *ConfigError.
var ErrConfig = errors.New("announce: invalid config")

// ConfigError is a Config validation error (fielderr.Error, matching
// ErrConfig): its path is "config." and the field, e.g.
// "config.Peers[1].HoldTime", its value the offending value.
type ConfigError = fielderr.Error

func configErr(field string, value any, format string, args ...any) *ConfigError {
	return &fielderr.Error{Path: "config." + field, Value: fmt.Sprint(value), Reason: fmt.Sprintf(format, args...), Err: ErrConfig}
}

// withDefaults returns c with the defaults applied to its zero fields, and
// private copies of its slices.
func (c Config) withDefaults() Config {
	if c.ListenPort == 0 {
		c.ListenPort = -1
	}
	c.Communities = append([]string(nil), c.Communities...)
	peers := make([]Peer, len(c.Peers))
	for i, p := range c.Peers {
		if p.Port == 0 {
			p.Port = DefaultPort
		}
		if p.HoldTime == 0 {
			p.HoldTime = DefaultHoldTime
		}
		if p.KeepaliveTime == 0 {
			p.KeepaliveTime = (p.HoldTime / 3).Truncate(time.Second)
		}
		if p.ConnectRetry == 0 {
			p.ConnectRetry = DefaultConnectRetry
		}
		if p.BFD != nil {
			b := *p.BFD
			if b.MinRx == 0 {
				b.MinRx = DefaultBFDInterval
			}
			if b.MinTx == 0 {
				b.MinTx = DefaultBFDInterval
			}
			if b.Multiplier == 0 {
				b.Multiplier = DefaultBFDMultiplier
			}
			p.BFD = &b
		}
		peers[i] = p
	}
	c.Peers = peers
	return c
}

// Validate reports the first problem of c, with its defaults applied, as a
// *ConfigError naming the field and the value.
func (c Config) Validate() error {
	d := c.withDefaults()
	if d.ASN == 0 {
		return configErr("ASN", d.ASN, "must not be 0")
	}
	if !d.RouterID.IsValid() || !d.RouterID.Is4() || d.RouterID.IsUnspecified() {
		return configErr("RouterID", d.RouterID, "must be an IPv4 address other than 0.0.0.0")
	}
	if d.ListenPort < -1 || d.ListenPort > 65535 {
		return configErr("ListenPort", d.ListenPort, "must be -1 or 0 (do not listen) or a port 1..65535")
	}
	if len(d.Peers) == 0 {
		return configErr("Peers", "[]", "at least one peer is required")
	}
	for i, s := range d.Communities {
		if _, err := parseCommunity(s); err != nil {
			return configErr(fmt.Sprintf("Communities[%d]", i), strconv.Quote(s), "%v", err)
		}
	}
	if a := d.NextHop4; a.IsValid() && (!a.Is4() || !usableUnicast(a)) {
		return configErr("NextHop4", a, "must be a unicast IPv4 address")
	}
	if a := d.NextHop6; a.IsValid() && (!a.Is6() || a.Is4In6() || a.Zone() != "" || !usableUnicast(a) || a.IsLinkLocalUnicast()) {
		return configErr("NextHop6", a, "must be a global unicast IPv6 address (no zone, not IPv4-mapped, not link-local)")
	}
	seen := map[netip.Addr]int{}
	for i, p := range d.Peers {
		f := func(name string) string { return fmt.Sprintf("Peers[%d].%s", i, name) }
		a := p.Address
		switch {
		case !a.IsValid():
			return configErr(f("Address"), "unset", "is required")
		case a.Zone() != "" || a.Is4In6():
			return configErr(f("Address"), a, "must be a plain IPv4 or IPv6 address (no zone, no IPv4-mapped form)")
		case a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == broadcast4:
			return configErr(f("Address"), a, "must be a unicast address that is not link-local")
		}
		if j, dup := seen[a]; dup {
			return configErr(f("Address"), a, "is also Peers[%d].Address", j)
		}
		seen[a] = i
		if p.ASN == 0 {
			return configErr(f("ASN"), p.ASN, "must not be 0")
		}
		if err := wholeSeconds(p.HoldTime, MinHoldTime, MaxHoldTime); err != nil {
			return configErr(f("HoldTime"), p.HoldTime, "%v", err)
		}
		if err := wholeSeconds(p.KeepaliveTime, time.Second, p.HoldTime-time.Second); err != nil {
			return configErr(f("KeepaliveTime"), p.KeepaliveTime, "%v (the hold time is %s)", err, p.HoldTime)
		}
		if err := wholeSeconds(p.ConnectRetry, time.Second, maxConnectRetry); err != nil {
			return configErr(f("ConnectRetry"), p.ConnectRetry, "%v", err)
		}
		if p.Passive && d.ListenPort <= 0 {
			return configErr(f("Passive"), true, "needs Config.ListenPort to accept the router's connection")
		}
		if b := p.BFD; b != nil {
			for _, iv := range []struct {
				name string
				v    time.Duration
			}{{"MinRx", b.MinRx}, {"MinTx", b.MinTx}} {
				if iv.v < MinBFDInterval || iv.v > MaxBFDInterval || iv.v%time.Microsecond != 0 {
					return configErr(f("BFD."+iv.name), iv.v, "must be whole microseconds in [%s, %s]", MinBFDInterval, MaxBFDInterval)
				}
			}
			if b.Multiplier < 1 || b.Multiplier > MaxBFDMultiplier {
				return configErr(f("BFD.Multiplier"), b.Multiplier, "must be in [1, %d]", MaxBFDMultiplier)
			}
		}
	}
	return nil
}

// usableUnicast reports whether a can be a next hop or a VIP: not
// unspecified, loopback, multicast or the IPv4 broadcast address.
func usableUnicast(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && a != broadcast4
}

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// wholeSeconds checks that d is a whole number of seconds in [lo, hi]
// (BGP's timers, and GoBGP's API, count seconds).
func wholeSeconds(d, lo, hi time.Duration) error {
	if d%time.Second != 0 {
		return errors.New("must be a whole number of seconds")
	}
	if d < lo || d > hi {
		return fmt.Errorf("must be in [%s, %s]", lo, hi)
	}
	return nil
}

// parseCommunity parses "ASN:value" (RFC 1997) into its 32-bit form.
func parseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, errors.New(`must be "ASN:value"`)
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, errors.New(`must be "ASN:value" with both in 0..65535`)
	}
	return uint32(h)<<16 | uint32(l), nil
}
