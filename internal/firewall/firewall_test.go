package firewall

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/fielderr"
	"github.com/sluicelb/sluice/internal/importtest"
	"github.com/sluicelb/sluice/internal/packet"
)

// naive is the obviously correct model: each rule's fields checked with
// netip and plain comparisons, in order.
func naive(rules []Rule, def Action, t *packet.Tuple) (Action, int) {
	src, dst := t.SrcAddr(), t.DstAddr()
	in := func(r PortRange, p uint16) bool { return r.Any() || r.Lo <= p && p <= r.Hi }
	pfx := func(p netip.Prefix, a netip.Addr) bool { return p == netip.Prefix{} || p.Contains(a) }
	for i, r := range rules {
		if (r.Proto == 0 || r.Proto == t.Proto) && in(r.SrcPorts, t.SrcPort) && in(r.DstPorts, t.DstPort) &&
			pfx(r.Src, src) && pfx(r.Dst, dst) {
			return r.Action, i
		}
	}
	return def, -1
}

func tuple(proto uint8, src, dst string) packet.Tuple {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	v := uint8(4)
	if s.Addr().Is6() {
		v = 6
	}
	return packet.Tuple{Src: s.Addr().As16(), Dst: d.Addr().As16(), SrcPort: s.Port(), DstPort: d.Port(), Proto: proto, IPVersion: v}
}

func TestMatchTable(t *testing.T) {
	rules := []Rule{
		{Name: "deny-bad-client", Action: Deny, Src: netip.MustParsePrefix("203.0.113.0/25")},
		{Name: "web", Action: Allow, Dst: netip.MustParsePrefix("198.18.0.10/32"), Proto: 6, DstPorts: PortRange{80, 80}},
		{Name: "tls", Action: Allow, Dst: netip.MustParsePrefix("198.18.0.10/32"), Proto: 6, DstPorts: PortRange{443, 443}},
		{Name: "dns-v6", Action: Allow, Dst: netip.MustParsePrefix("2001:db8::/64"), Proto: 17, DstPorts: PortRange{53, 53}},
		{Name: "high-src", Action: Deny, Proto: 17, SrcPorts: PortRange{0, 1023}},
		{Name: "udp", Action: Allow, Proto: 17},
	}
	cases := []struct {
		t      packet.Tuple
		action Action
		rule   int
	}{
		{tuple(6, "203.0.113.7:40000", "198.18.0.10:443"), Deny, 0},
		{tuple(6, "203.0.113.200:40000", "198.18.0.10:443"), Allow, 2},
		{tuple(6, "203.0.113.200:40000", "198.18.0.10:80"), Allow, 1},
		{tuple(6, "203.0.113.200:40000", "198.18.0.10:22"), Deny, -1},
		{tuple(6, "203.0.113.200:40000", "198.18.0.11:443"), Deny, -1},
		{tuple(17, "[2001:db8:c::1]:5353", "[2001:db8::10]:53"), Allow, 3},
		{tuple(17, "[2001:db8:c::1]:53", "[2001:db8:1::10]:53"), Deny, 4},
		{tuple(17, "[2001:db8:c::1]:5353", "[2001:db8:1::10]:53"), Allow, 5},
		// An IPv4 prefix never matches IPv6, even mapped-looking.
		{tuple(6, "[::ffff:203.0.113.7]:40000", "[2001:db8::10]:443"), Deny, -1},
		{tuple(1, "203.0.113.200:7", "198.18.0.10:7"), Deny, -1},
	}
	for _, useBV := range []bool{false, true} {
		s, err := compile(rules, Deny, useBV)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			a, i := s.Match(&c.t)
			if a != c.action || i != c.rule {
				t.Errorf("bv=%v %v: got %v rule %d, want %v rule %d", useBV, c.t, a, i, c.action, c.rule)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, c := range []struct {
		rules []Rule
		def   Action
		path  string
	}{
		{nil, 0, "default"},
		{[]Rule{{Action: 3}}, Allow, "rules[0].action"},
		{[]Rule{{Action: Allow}, {Action: Deny, DstPorts: PortRange{9000, 80}}}, Allow, "rules[1].dst_ports"},
		{[]Rule{{Action: Allow, SrcPorts: PortRange{2, 1}}}, Allow, "rules[0].src_ports"},
		{[]Rule{{Action: Allow, Src: netip.MustParsePrefix("::ffff:1.2.3.0/120")}}, Allow, "rules[0].src"},
		{[]Rule{{Action: Allow, Dst: netip.PrefixFrom(netip.MustParseAddr("1.2.3.4"), 33)}}, Allow, "rules[0].dst"},
		{[]Rule{{Action: Allow, Src: netip.MustParsePrefix("::/0"), Dst: netip.MustParsePrefix("0.0.0.0/0")}}, Allow, "rules[0].dst"},
		{make([]Rule, MaxRules+1), Allow, "rules"},
	} {
		_, err := Compile(c.rules, c.def)
		var fe *fielderr.Error
		if !errors.Is(err, ErrRule) || !errors.As(err, &fe) || fe.Path != c.path {
			t.Errorf("Compile(%d rules, %v) = %v, want a fielderr.Error on %s", len(c.rules), c.def, err, c.path)
		}
	}
	if _, err := Compile([]Rule{{Action: Allow}, {Action: Deny, DstPorts: PortRange{9000, 80}}}, Allow); err.Error() !=
		"rules[1].dst_ports: 9000-80 has lo above hi" {
		t.Errorf("message: %v", err)
	}
}

// randRules makes n random rules from a small pool of prefixes and port
// bounds, so that rules overlap, nest and share bounds.
func randRules(r *rand.Rand, n int) []Rule {
	v4 := []string{"198.18.0.0/15", "198.18.0.0/24", "198.18.0.10/32", "198.18.0.128/25", "203.0.113.0/24", "203.0.113.64/26", "0.0.0.0/0", "10.0.0.0/8"}
	v6 := []string{"2001:db8::/32", "2001:db8::/64", "2001:db8::10/128", "2001:db8:c::/48", "::/0", "2001:db8:8000::/33"}
	pfx := func() netip.Prefix {
		switch r.IntN(4) {
		case 0:
			return netip.Prefix{}
		case 1:
			return netip.MustParsePrefix(v6[r.IntN(len(v6))])
		}
		return netip.MustParsePrefix(v4[r.IntN(len(v4))])
	}
	bounds := []uint16{0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 40000, 65535}
	ports := func() PortRange {
		if r.IntN(3) == 0 {
			return PortRange{}
		}
		a, b := bounds[r.IntN(len(bounds))], bounds[r.IntN(len(bounds))]
		return PortRange{min(a, b), max(a, b)}
	}
	protos := []uint8{0, 0, 6, 17, 1}
	rules := make([]Rule, n)
	for i := range rules {
		rules[i] = Rule{Action: Action(1 + r.IntN(2)), Src: pfx(), Dst: pfx(), Proto: protos[r.IntN(len(protos))],
			SrcPorts: ports(), DstPorts: ports()}
		for rules[i].Src.IsValid() && rules[i].Dst.IsValid() && rules[i].Src.Addr().Is4() != rules[i].Dst.Addr().Is4() {
			rules[i].Dst = pfx()
		}
	}
	return rules
}

// randTuple makes a packet near the rules' bounds: addresses in or just
// around the pool prefixes, ports at or next to the pool bounds.
func randTuple(r *rand.Rand) packet.Tuple {
	v6 := r.IntN(3) == 0
	var a, b netip.Addr
	pick := func() netip.Addr {
		if v6 {
			bases := []string{"2001:db8::", "2001:db8::10", "2001:db8::11", "2001:db8:c::5", "2001:db8:8000::", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1"}
			return netip.MustParseAddr(bases[r.IntN(len(bases))])
		}
		bases := []string{"198.18.0.10", "198.18.0.9", "198.18.0.127", "198.18.0.128", "198.19.255.255", "198.20.0.0", "203.0.113.63", "203.0.113.64", "10.1.2.3", "9.255.255.255"}
		return netip.MustParseAddr(bases[r.IntN(len(bases))])
	}
	a, b = pick(), pick()
	port := func() uint16 {
		bounds := []int{0, 1, 21, 22, 23, 53, 79, 80, 81, 443, 1023, 1024, 1025, 8080, 39999, 40000, 65534, 65535}
		return uint16(bounds[r.IntN(len(bounds))])
	}
	v := uint8(4)
	if v6 {
		v = 6
	}
	protos := []uint8{6, 17, 1, 58}
	return packet.Tuple{Src: a.As16(), Dst: b.As16(), SrcPort: port(), DstPort: port(), Proto: protos[r.IntN(len(protos))], IPVersion: v}
}

// TestMatchModel compares both matchers with the model on random rule lists
// of many sizes and random packets.
func TestMatchModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1998, 3))
	sizes := []int{0, 1, 2, 5, 16, 17, 63, 64, 65, 200}
	if !testing.Short() {
		sizes = append(sizes, 1000)
	}
	for _, n := range sizes {
		for round := range 5 {
			rules := randRules(r, n)
			def := Action(1 + round%2)
			for _, useBV := range []bool{false, true} {
				s, err := compile(rules, def, useBV)
				if err != nil {
					t.Fatal(err)
				}
				for range 2000 {
					tp := randTuple(r)
					wa, wi := naive(rules, def, &tp)
					if a, i := s.Match(&tp); a != wa || i != wi {
						t.Fatalf("%d rules (bv %v), %v: got %v rule %d, want %v rule %d (%+v)", n, useBV, tp, a, i, wa, wi, ruleAt(rules, wi))
					}
				}
			}
		}
	}
}

func ruleAt(rules []Rule, i int) any {
	if i < 0 {
		return "default"
	}
	return rules[i]
}

func TestCounters(t *testing.T) {
	s, err := Compile([]Rule{{Action: Deny, Proto: 1}, {Action: Allow, Proto: 6}}, Deny)
	if err != nil {
		t.Fatal(err)
	}
	w1, w2 := s.NewCounters(), s.NewCounters()
	for i, p := range []uint8{6, 6, 1, 17, 6} {
		tp := packet.Tuple{Proto: p, IPVersion: 4}
		_, rule := s.Match(&tp)
		[]*Counters{w1, w2}[i%2].Hit(rule)
	}
	sum := make([]uint64, s.Len()+1)
	w1.AddTo(sum)
	w2.AddTo(sum)
	if fmt.Sprint(sum) != "[1 1 3]" || w1.Rule(1) != 2 || w2.Rule(-1) != 1 {
		t.Fatalf("sum %v, w1 %v, w2 %v", sum, w1.hits, w2.hits)
	}
}

func TestMatchZeroAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range []int{10, 200} {
		s, err := Compile(randRules(r, n), Deny)
		if err != nil {
			t.Fatal(err)
		}
		c := s.NewCounters()
		tps := make([]packet.Tuple, 64)
		for i := range tps {
			tps[i] = randTuple(r)
		}
		allocs := testing.AllocsPerRun(100, func() {
			for i := range tps {
				_, rule := s.Match(&tps[i])
				c.Hit(rule)
			}
		})
		if allocs != 0 {
			t.Errorf("%d rules: %v allocations, want 0", n, allocs)
		}
	}
}

// diverseRules makes n rules with distinct random prefixes (IPv4 /16 to
// /32 in 10.0.0.0/8, IPv6 /48 to /128 in 2001:db8::/32) and random port
// ranges: the shape of a long real list, where every rule adds its own
// interval bounds.
func diverseRules(r *rand.Rand, n int) []Rule {
	rules := make([]Rule, n)
	for i := range rules {
		var p netip.Prefix
		if r.IntN(4) == 0 {
			var a [16]byte
			a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
			for k := 4; k < 16; k++ {
				a[k] = byte(r.Uint32())
			}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 48+r.IntN(81)).Masked()
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}), 16+r.IntN(17)).Masked()
		}
		lo := uint16(r.IntN(65536))
		rules[i] = Rule{Action: Action(1 + r.IntN(2)), Src: p, Proto: []uint8{6, 17}[r.IntN(2)],
			DstPorts: PortRange{lo, lo + uint16(r.IntN(int(65535-lo)+1))}}
	}
	return rules
}

// BenchmarkMatch compares the linear scan and the bit vectors at 4, 10,
// 16, 100 and 1000 rules, for two kinds of lists: "pool" rules drawn from a
// few overlapping prefixes and port bounds (about the first tenth of a list
// decides most packets), and "diverse" rules with distinct prefixes and
// ranges (more intervals to search; random packets in 10.0.0.0/8 rarely
// match, the scan's worst case). "miss" is a packet no rule matches.
func BenchmarkMatch(b *testing.B) {
	for _, kind := range []string{"pool", "diverse"} {
		for _, n := range []int{4, 10, 16, 100, 1000} {
			r := rand.New(rand.NewPCG(uint64(n), 1))
			var rules []Rule
			tps := make([]packet.Tuple, 256)
			if kind == "pool" {
				rules = randRules(r, n)
				for i := range rules { // no rule matches protocol 58: the miss packet
					if rules[i].Proto == 0 {
						rules[i].Proto = 6
					}
				}
				for i := range tps {
					tps[i] = randTuple(r)
				}
			} else {
				rules = diverseRules(r, n)
				for i := range tps {
					a := rules[r.IntN(n)].Src.Addr().As16() // in (or near) a rule's prefix
					a[15] ^= byte(r.IntN(2))
					v := uint8(6)
					if netip.AddrFrom16(a).Is4In6() {
						v = 4
					}
					tps[i] = packet.Tuple{Src: a, Dst: a, SrcPort: 40000, DstPort: uint16(r.IntN(65536)), Proto: 6, IPVersion: v}
				}
			}
			miss := tuple(58, "[2001:db8::10]:0", "[2001:db8::11]:0")
			for _, mode := range []struct {
				name string
				bv   bool
			}{{"linear", false}, {"bitvec", true}} {
				s, err := compile(rules, Deny, mode.bv)
				if err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("%s/%s/%d/mixed", kind, mode.name, n), func(b *testing.B) {
					i := 0
					b.ReportAllocs()
					for b.Loop() {
						s.Match(&tps[i&255])
						i++
					}
				})
				b.Run(fmt.Sprintf("%s/%s/%d/miss", kind, mode.name, n), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if _, i := s.Match(&miss); i != -1 {
							b.Fatal("matched")
						}
					}
				})
			}
		}
	}
}

// TestImports keeps firewall a datapath package: the standard library,
// internal/packet and internal/fielderr.
func TestImports(t *testing.T) {
	importtest.Only(t, "firewall", "encoding/binary", "errors", "fmt", "math/bits", "net/netip", "slices",
		"github.com/sluicelb/sluice/internal/packet", "github.com/sluicelb/sluice/internal/fielderr")
}
