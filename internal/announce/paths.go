package announce

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// ErrPrefix is matched (errors.Is) by every *PrefixError.
var ErrPrefix = errors.New("announce: prefix cannot be announced")

// PrefixError is why Set refused its prefixes[Index].
type PrefixError struct {
	Index  int
	Prefix netip.Prefix
	Reason string
}

// Error implements error.
func (e *PrefixError) Error() string {
	return fmt.Sprintf("announce: prefixes[%d] %s: %s", e.Index, e.Prefix, e.Reason)
}

// Is reports whether target is ErrPrefix.
func (e *PrefixError) Is(target error) bool { return target == ErrPrefix }

var _ error = (*PrefixError)(nil)

// Route is one host route to announce: Prefix with NextHop as BGP next
// hop, or, with NextHop unset, the node's own (Config.NextHop4/6 or the
// session's local address). A set NextHop is a third-party next hop: the
// router must reach it directly on the subnet it shares with this node
// (GoBGP sends a local path's next hop unchanged over eBGP).
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

// prefixSet is a set of host routes, each with its next hop (unset: the
// node's own).
type prefixSet map[netip.Prefix]netip.Addr

// diff returns the prefixes of want missing from have or with another next
// hop there (to announce: an announcement replaces the earlier one) and
// those of have missing from want (to withdraw), each sorted.
func diff(have, want prefixSet) (add, del []netip.Prefix) {
	for p, nh := range want {
		if hnh, ok := have[p]; !ok || hnh != nh {
			add = append(add, p)
		}
	}
	for p := range have {
		if _, ok := want[p]; !ok {
			del = append(del, p)
		}
	}
	slices.SortFunc(add, netip.Prefix.Compare)
	slices.SortFunc(del, netip.Prefix.Compare)
	return add, del
}

// pathBuilder makes the GoBGP paths of this node's routes. Immutable.
type pathBuilder struct {
	communities []uint32
	nextHop4    netip.Addr // unspecified: the session's local address
	nextHop6    netip.Addr
	// Whether some peer is reached over IPv4 or IPv6: an unset next hop of
	// the other family cannot be derived from such a session.
	v4Peer, v6Peer bool
	configured4    bool // NextHop4 was configured
	configured6    bool
}

func newPathBuilder(c Config) pathBuilder {
	b := pathBuilder{nextHop4: c.NextHop4, nextHop6: c.NextHop6,
		configured4: c.NextHop4.IsValid(), configured6: c.NextHop6.IsValid()}
	if !b.configured4 {
		b.nextHop4 = netip.IPv4Unspecified()
	}
	if !b.configured6 {
		b.nextHop6 = netip.IPv6Unspecified()
	}
	for _, s := range c.Communities {
		v, _ := parseCommunity(s) // validated
		b.communities = append(b.communities, v)
	}
	for _, p := range c.Peers {
		if p.Address.Is4() {
			b.v4Peer = true
		} else {
			b.v6Peer = true
		}
	}
	return b
}

// check reports why p cannot be announced with the node's own next hop,
// or "".
func (b *pathBuilder) check(p netip.Prefix) string {
	if r := b.checkPrefix(p); r != "" {
		return r
	}
	a := p.Addr()
	switch {
	case a.Is6() && b.v4Peer && !b.configured6:
		return "an IPv6 route over an IPv4 session needs Config.NextHop6"
	case a.Is4() && b.v6Peer && !b.configured4:
		return "an IPv4 route over an IPv6 session needs Config.NextHop4"
	}
	return ""
}

// checkPrefix reports why p cannot be announced whatever its next hop, or
// "".
func (b *pathBuilder) checkPrefix(p netip.Prefix) string {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return "not a valid prefix"
	case a.Is4In6():
		return "IPv4-mapped IPv6 addresses are not announced; use the IPv4 form"
	case p.Bits() != a.BitLen():
		return fmt.Sprintf("not a host route (/%d)", a.BitLen())
	case !usableUnicast(a) || a.IsLinkLocalUnicast():
		return "not a global unicast address"
	}
	return ""
}

// checkNextHop reports why nh cannot be the next hop of p, or "".
func checkNextHop(p netip.Prefix, nh netip.Addr) string {
	switch {
	case !nh.IsValid():
		return ""
	case nh.Is4() != p.Addr().Is4() || nh.Is4In6():
		return fmt.Sprintf("next hop %s is not of the route's family", nh)
	case !usableUnicast(nh) || nh.Zone() != "" || nh.Is6() && nh.IsLinkLocalUnicast():
		return fmt.Sprintf("next hop %s is not a global unicast address", nh)
	}
	return ""
}

// path returns the path announcing (or, withdraw, withdrawing) p with next
// hop nh (unset: the node's own). Family is always set: GoBGP v4 panics on
// a path without one.
func (b *pathBuilder) path(p netip.Prefix, nh netip.Addr, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	family := bgp.RF_IPv4_UC
	nh4, nh6 := b.nextHop4, b.nextHop6
	if nh.IsValid() {
		nh4, nh6 = nh, nh
	}
	if p.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(nh4)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		family = bgp.RF_IPv6_UC
		mp, err := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nh6)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if len(b.communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(b.communities))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}
