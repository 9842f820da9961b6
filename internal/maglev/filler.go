package maglev

import "math/bits"

// cursor is a backend's place in its preference list: pos is the next slot
// it will try, (offset + j*skip) % M for its current j.
type cursor struct {
	pos, skip uint32
}

// defaultTail returns the number of free slots at which a build of a table
// of size m stops probing and starts scanning the free list (see filler).
// It only changes the speed of Build, never its result.
func defaultTail(m uint32) uint32 {
	// Probing for a free slot costs about m/free steps, scanning the free
	// list costs free steps of a few more instructions each: they cross
	// near sqrt(m).
	r := uint32(1)
	for r*r < m {
		r++
	}
	return r
}

// filler places entries for populate. A turn of backend k puts it at the
// first free slot of its preference list pos, pos+skip, pos+2*skip, ...
// (mod M) and moves its cursor one step past that slot.
//
// While many slots are free it walks the list, testing a bitmap of filled
// slots (M/8 bytes, in L1 for the default M). That takes about M/free steps,
// so the last few hundred entries would cost as much as all the others. Once
// at most tailAt slots are free it keeps them in a list instead, and finds
// the first one along the preference list directly: slot c lies
// d(c) = (c - pos) * skip^-1 mod M steps from pos, so the answer is the free
// slot with the least d. Both ways give the same slot; tests build tables
// with the switch at different points and compare them.
type filler struct {
	m      uint32
	red    reducer  // % m
	owner  []uint16 // the table being filled
	filled []uint64 // bit s set: slot s taken; bits past m are set
	cur    []cursor // per backend
	turns  []uint32 // per backend: entries placed
	left   uint32   // free slots

	// Tail mode.
	tailAt uint32
	tail   bool     // free is valid
	free   []uint32 // the free slots, in no particular order
	inv    []uint32 // per backend: skip^-1 mod m, 0 until first needed
}

func newFiller(owner []uint16, n int, tailAt uint32) *filler {
	m := uint32(len(owner))
	f := &filler{
		m:      m,
		red:    newReducer(m),
		owner:  owner,
		filled: make([]uint64, (m+63)/64),
		cur:    make([]cursor, n),
		turns:  make([]uint32, n),
		left:   m,
		tailAt: tailAt,
	}
	if r := m % 64; r != 0 {
		f.filled[len(f.filled)-1] = ^uint64(0) << r
	}
	return f
}

// play gives the backends in order one turn each, and stops early when the
// table is full. It returns how many of them played.
func (f *filler) play(order []uint16) int {
	m, filled, owner, cur := f.m, f.filled, f.owner, f.cur
	for p, k := range order {
		if f.left <= f.tailAt {
			if !f.tail {
				f.enterTail()
			}
			owner[f.takeFromList(k)] = k
		} else {
			c := &cur[k]
			s := probe(filled, c.pos, c.skip, m)
			owner[s] = k
			c.pos = step(s, c.skip, m)
		}
		f.turns[k]++
		f.left--
		if f.left == 0 {
			return p + 1
		}
	}
	return len(order)
}

// probe marks and returns the first free slot of s, s+skip, s+2*skip, ...
// (mod m). It is kept out of line so that its loop gets registers of its own.
//
//go:noinline
func probe(filled []uint64, s, skip, m uint32) uint32 {
	for {
		w := &filled[s>>6]
		if bit := uint64(1) << (s & 63); *w&bit == 0 {
			*w |= bit
			return s
		}
		s = step(s, skip, m)
	}
}

// step returns (s + skip) % m for s, skip < m <= MaxM, without a branch:
// whether the sum wraps is a coin toss per backend, which a branch
// predictor cannot learn.
func step(s, skip, m uint32) uint32 {
	d := int32(s + skip - m) // in (-m, m): fits, as m <= 1<<24
	d += int32(m) & (d >> 31)
	return uint32(d)
}

// enterTail collects the free slots.
func (f *filler) enterTail() {
	f.tail = true
	f.free = f.free[:0]
	for i, w := range f.filled {
		for w = ^w; w != 0; w &= w - 1 {
			f.free = append(f.free, uint32(i*64+bits.TrailingZeros64(w)))
		}
	}
	if f.inv == nil {
		f.inv = make([]uint32, len(f.cur))
	}
}

// takeFromList places backend k at the free slot nearest along its
// preference list and returns the slot.
func (f *filler) takeFromList(k uint16) uint32 {
	c := &f.cur[k]
	inv := f.inv[k]
	if inv == 0 {
		inv = modInverse(c.skip, f.m)
		f.inv[k] = inv
	}
	m, pos, red := f.m, c.pos, f.red
	best, at := uint64(m), 0
	for i, s := range f.free {
		d := s + m - pos // (s - pos) mod m, in [0, 2m)
		if d >= m {
			d -= m
		}
		if x := red.mod(uint64(d) * uint64(inv)); x < best {
			best, at = x, i
		}
	}
	s := f.free[at]
	last := len(f.free) - 1
	f.free[at] = f.free[last]
	f.free = f.free[:last]
	f.filled[s>>6] |= 1 << (s & 63)
	next := s + c.skip
	if next >= f.m {
		next -= f.m
	}
	c.pos = next
	return s
}

// freeOwnedBy empties the slots whose owner satisfies gone, for the
// backends' turns to refill them.
func (f *filler) freeOwnedBy(gone func(k uint16) bool) {
	for s, o := range f.owner {
		if gone(o) {
			f.filled[s>>6] &^= 1 << (uint(s) & 63)
			f.left++
		}
	}
	f.tail = false // the free list is stale; play rebuilds it if needed
}

// modInverse returns x^-1 mod m for 0 < x < m, m prime (extended Euclid).
func modInverse(x, m uint32) uint32 {
	a, b := int64(x), int64(m)
	u, v := int64(1), int64(0) // u*x = a, v*x = b (mod m)
	for b != 0 {
		q := a / b
		a, b = b, a-q*b
		u, v = v, u-q*v
	}
	// a == gcd == 1
	if u < 0 {
		u += int64(m)
	}
	return uint32(u)
}
