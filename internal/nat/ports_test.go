package nat

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluicelb/sluice/internal/fielderr"
)

func TestLayoutValidate(t *testing.T) {
	for _, c := range []struct {
		l     Layout
		field string // "" = valid
	}{
		{DefaultLayout(1), ""},
		{DefaultLayout(4), ""},
		{DefaultLayout(3), ""},
		{Layout{Lo: 1, Hi: 1, Workers: 1}, ""},
		{Layout{Lo: 0, Hi: 100, Workers: 1}, "Lo"},
		{Layout{Lo: 100, Hi: 99, Workers: 1}, "Hi"},
		{Layout{Lo: 1, Hi: 100, Workers: 0}, "Workers"},
		{Layout{Lo: 1, Hi: 100, Workers: 1, Shift: 16}, "Shift"},
		// 1024..1279 is one block of 256: the second worker gets nothing.
		{Layout{Lo: 1024, Hi: 1279, Workers: 2, Shift: 8}, "Workers"},
	} {
		err := c.l.Validate()
		var fe *fielderr.Error
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: %v", c.l, err)
		case c.field != "" && (!errors.Is(err, ErrLayout) || !errors.As(err, &fe) || fe.Path != "layout."+c.field):
			t.Errorf("%+v: got %v, want a fielderr.Error on layout.%s", c.l, err, c.field)
		}
	}
}

// TestLayoutPartition: the workers' shares are disjoint, cover Lo..Hi,
// agree with Owner and Count, and (for a power of two) with SteeringMask.
func TestLayoutPartition(t *testing.T) {
	for _, l := range []Layout{
		DefaultLayout(1), DefaultLayout(2), DefaultLayout(3), DefaultLayout(8),
		{Lo: 1000, Hi: 1999, Workers: 4, Shift: 4},
		{Lo: 1, Hi: 65535, Workers: 2, Shift: 0},
		{Lo: 32768, Hi: 65535, Workers: 16, Shift: 10},
	} {
		owner := make(map[uint16]int)
		for w := range l.Workers {
			n := 0
			l.each(w, func(p uint16) {
				if o, dup := owner[p]; dup {
					t.Fatalf("%+v: port %d owned by workers %d and %d", l, p, o, w)
				}
				owner[p] = w
				if l.Owner(p) != w {
					t.Fatalf("%+v: Owner(%d) = %d, want %d", l, p, l.Owner(p), w)
				}
				n++
			})
			if n != l.Count(w) {
				t.Fatalf("%+v: Count(%d) = %d, enumerated %d", l, w, l.Count(w), n)
			}
		}
		if len(owner) != int(l.Hi)-int(l.Lo)+1 {
			t.Fatalf("%+v: %d ports owned, want %d", l, len(owner), int(l.Hi)-int(l.Lo)+1)
		}
		if l.Owner(l.Lo-1) != -1 || (l.Hi < 65535 && l.Owner(l.Hi+1) != -1) {
			t.Fatalf("%+v: a port outside the range has an owner", l)
		}
		for w := range l.Workers {
			v, m, ok := l.SteeringMask(w)
			if ok != (l.Workers&(l.Workers-1) == 0) {
				t.Fatalf("%+v: SteeringMask ok = %v", l, ok)
			}
			if !ok {
				continue
			}
			for p, o := range owner {
				if (p&m == v) != (o == w) {
					t.Fatalf("%+v: port %d (worker %d): mask %#04x value %#04x says worker %d: %v", l, p, o, m, v, w, p&m == v)
				}
			}
		}
	}
}

func mustPorts(t testing.TB, l Layout, w int) *Ports {
	t.Helper()
	p, err := NewPorts(l, w)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPortsFIFOAndExhaustion(t *testing.T) {
	l := Layout{Lo: 2000, Hi: 2015, Workers: 2, Shift: 2} // worker 1: 2004-2007, 2012-2015
	p := mustPorts(t, l, 1)
	if p.Cap() != 8 || p.Free() != 8 {
		t.Fatalf("Cap %d Free %d, want 8 8", p.Cap(), p.Free())
	}
	var got []uint16
	for {
		port, ok := p.Allocate()
		if !ok {
			break
		}
		got = append(got, port)
	}
	want := []uint16{2004, 2005, 2006, 2007, 2012, 2013, 2014, 2015}
	if len(got) != len(want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allocated %v, want %v", got, want)
		}
	}
	if _, ok := p.Allocate(); ok || p.Free() != 0 {
		t.Fatal("allocation from an exhausted range")
	}
	// Released ports come back in release order.
	for _, port := range []uint16{2013, 2005, 2015} {
		if !p.Release(port) {
			t.Fatalf("Release(%d) = false", port)
		}
	}
	for _, want := range []uint16{2013, 2005, 2015} {
		if port, ok := p.Allocate(); !ok || port != want {
			t.Fatalf("Allocate = %d %v, want %d", port, ok, want)
		}
	}
	// Refused releases.
	if !p.Release(2004) || p.Release(2004) {
		t.Error("double release accepted")
	}
	if p.Release(2000) || p.Release(9) {
		t.Error("release of a port the worker does not own accepted")
	}
	if p.Owns(2000) || !p.Owns(2012) || p.InUse(2004) || !p.InUse(2012) {
		t.Error("Owns / InUse wrong")
	}
	if _, err := NewPorts(l, 2); !errors.Is(err, ErrLayout) {
		t.Errorf("NewPorts(worker 2 of 2) = %v", err)
	}
}

// TestPortsModel runs random allocations and releases against a map and
// checks every answer and the FIFO order.
func TestPortsModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 65535))
	for _, l := range []Layout{{Lo: 1024, Hi: 1100, Workers: 3, Shift: 3}, DefaultLayout(2)} {
		p := mustPorts(t, l, 1)
		inUse := map[uint16]bool{}
		var queue []uint16 // the model's FIFO of free ports
		l.each(1, func(port uint16) { queue = append(queue, port) })
		var held []uint16
		ops := 20000
		if testing.Short() {
			ops = 5000
		}
		for range ops {
			switch op := r.IntN(10); {
			case op < 5:
				port, ok := p.Allocate()
				if ok != (len(queue) > 0) {
					t.Fatalf("Allocate ok = %v with %d free", ok, len(queue))
				}
				if !ok {
					continue
				}
				if port != queue[0] {
					t.Fatalf("Allocate = %d, want %d (FIFO)", port, queue[0])
				}
				queue = queue[1:]
				inUse[port] = true
				held = append(held, port)
			case op < 9 && len(held) > 0:
				i := r.IntN(len(held))
				port := held[i]
				held[i] = held[len(held)-1]
				held = held[:len(held)-1]
				if !p.Release(port) {
					t.Fatalf("Release(%d) = false", port)
				}
				delete(inUse, port)
				queue = append(queue, port)
			default:
				port := uint16(r.IntN(65536))
				if got := p.Release(port); got != inUse[port] {
					t.Fatalf("Release(%d) = %v, model %v", port, got, inUse[port])
				}
				if inUse[port] {
					delete(inUse, port)
					queue = append(queue, port)
					for i, h := range held {
						if h == port {
							held = append(held[:i], held[i+1:]...)
							break
						}
					}
				}
			}
			if p.Free() != len(queue) {
				t.Fatalf("Free = %d, model %d", p.Free(), len(queue))
			}
		}
	}
}

func TestPool(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("198.18.30.11"), netip.MustParseAddr("2001:db8:30::11"), netip.MustParseAddr("198.18.30.12")}
	l := Layout{Lo: 5000, Hi: 5003, Workers: 1}
	p, err := NewPool(addrs, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Cap() != 3*2*4 || p.NumAddrs() != 3 {
		t.Fatalf("Cap %d NumAddrs %d", p.Cap(), p.NumAddrs())
	}
	// Round robin over the addresses.
	for i := range 3 {
		a, port, ok := p.Allocate(6)
		if !ok || a != i || port != 5000 {
			t.Fatalf("Allocate = %d %d %v, want %d 5000", a, port, ok, i)
		}
	}
	// IPv4 only: addresses 0 and 2 until they run out (3 ports left each).
	n := 0
	for {
		a, _, ok := p.AllocateFamily(6, false)
		if !ok {
			break
		}
		if !netip.AddrFrom16(*p.Addr(a)).Unmap().Is4() {
			t.Fatalf("AllocateFamily(v4) gave address %d", a)
		}
		n++
	}
	if n != 6 {
		t.Fatalf("%d IPv4 allocations, want 6", n)
	}
	if a, _, ok := p.Allocate(6); !ok || a != 1 {
		t.Fatalf("the IPv6 address still has ports: got %d %v", a, ok)
	}
	if p.Free(6) != 2 || p.Free(17) != 12 {
		t.Fatalf("Free TCP %d UDP %d, want 2 12", p.Free(6), p.Free(17))
	}
	if !p.Release(6, 0, 5001) || p.Release(6, 0, 5001) || p.Release(17, 0, 5000) || p.Release(6, 3, 5000) {
		t.Fatal("Release accepted a port that is not allocated")
	}
	for _, bad := range [][]netip.Addr{nil, {addrs[0], addrs[0]}, {netip.MustParseAddr("::ffff:1.2.3.4")}, {{}}} {
		if _, err := NewPool(bad, l, 0); !errors.Is(err, ErrLayout) {
			t.Errorf("NewPool(%v) = %v", bad, err)
		}
	}
}

func TestPortsZeroAllocs(t *testing.T) {
	p, err := NewPool([]netip.Addr{netip.MustParseAddr("198.18.30.11")}, DefaultLayout(2), 0)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		a, port, ok := p.Allocate(6)
		if !ok || !p.Release(6, a, port) {
			panic("allocate/release failed")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per allocate+release, want 0", allocs)
	}
}

// BenchmarkPorts allocates and releases with a steady half-full range.
func BenchmarkPorts(b *testing.B) {
	p := mustPorts(b, DefaultLayout(2), 0)
	var held [1 << 14]uint16
	for i := range held {
		held[i], _ = p.Allocate()
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if !p.Release(held[i]) {
			b.Fatal("release failed")
		}
		var ok bool
		if held[i], ok = p.Allocate(); !ok {
			b.Fatal("allocate failed")
		}
		i = (i + 7919) & (len(held) - 1)
	}
}

func BenchmarkPool(b *testing.B) {
	p, err := NewPool([]netip.Addr{netip.MustParseAddr("198.18.30.11"), netip.MustParseAddr("198.18.30.12")}, DefaultLayout(2), 1)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		a, port, ok := p.Allocate(6)
		if !ok || !p.Release(6, a, port) {
			b.Fatal("allocate/release failed")
		}
	}
}
