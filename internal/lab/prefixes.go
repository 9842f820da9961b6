package lab

import (
	"net/netip"
	"slices"
)

// LBPrefixes returns the fewest prefixes that hold exactly the LB nodes'
// service-segment addresses, IPv4 and IPv6: what the backends' agents take
// as --lb-prefix (the LB nodes send GUE and VIP probes from these
// addresses). They hold neither the router, nor the backends, nor anything
// on the client segment. With three LB nodes: 198.18.30.11/32,
// 198.18.30.12/31, 2001:db8:30::11/128, 2001:db8:30::12/127.
func (l *Lab) LBPrefixes() []netip.Prefix { return nodePrefixes(l.LBs) }

// BackendPrefixes returns the fewest prefixes that hold exactly the backends'
// service-segment addresses: what their agents take as --hop-prefix (an
// agent forwards second-chance packets from its own address). With three
// backends: 198.18.30.101/32, 198.18.30.102/31, 2001:db8:30::101/128,
// 2001:db8:30::102/127.
func (l *Lab) BackendPrefixes() []netip.Prefix { return nodePrefixes(l.Backends) }

// ClientPrefixes returns the prefixes that hold exactly the client's
// addresses (198.18.10.2/32, 2001:db8:10::2/128): the fastpath client
// prefixes of the scenarios.
func (l *Lab) ClientPrefixes() []netip.Prefix { return nodePrefixes([]*Node{l.Client}) }

func nodePrefixes(ns []*Node) []netip.Prefix {
	var addrs []netip.Addr
	for _, n := range ns {
		addrs = append(addrs, n.Addr4, n.Addr6)
	}
	return coverAddrs(addrs)
}

// coverAddrs returns the fewest prefixes whose union is exactly the set of
// addrs (IPv4 first, each family in address order).
func coverAddrs(addrs []netip.Addr) []netip.Prefix {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	var out []netip.Prefix
	for i := 0; i < len(addrs); {
		j := i // addrs[i..j] is a run of consecutive addresses
		for j+1 < len(addrs) && addrs[j].Next() == addrs[j+1] {
			j++
		}
		out = append(out, coverRange(addrs[i], addrs[j])...)
		i = j + 1
	}
	return out
}

// coverRange returns the fewest prefixes whose union is exactly
// [first, last] (one family, first <= last).
func coverRange(first, last netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for {
		bits := first.BitLen()
		for bits > 0 {
			wider := netip.PrefixFrom(first, bits-1)
			if wider.Masked().Addr() != first || lastAddr(wider).Compare(last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(first, bits)
		out = append(out, p)
		end := lastAddr(p)
		if end.Compare(last) >= 0 {
			return out
		}
		first = end.Next()
	}
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	host := p.Addr().BitLen() - p.Bits() // host bits, counted from the end
	for i := 15; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}
