package maglev

import "math/bits"

// This file holds the placement engine of Build. Everything here changes
// how fast a table is built, never what it contains: the three ways of
// finding a backend's next free slot below give the same slot, and tests
// build tables with the switches between them moved around and compare them
// with each other and with a transcription of the paper.

// cursor is a backend's place in its preference list: pos is the next slot
// it will try, (offset + j*skip) % M for its current j. Steps are kept as
// back[i] = M - (i*skip % M), the amount to subtract from a slot to move i
// places on when that wraps; back[0] = M moves nowhere.
type cursor struct {
	pos  uint32
	back [5]uint32
}

func newCursor(offset, skip, m uint32) cursor {
	c := cursor{pos: offset}
	step := uint32(0) // i*skip % m
	for i := range c.back {
		c.back[i] = m - step
		if step += skip; step >= m {
			step -= m
		}
	}
	return c
}

// advance returns slot s moved on by the step whose back is b: s - b, plus m
// if that is negative. Whether it wraps is a coin toss per step, which a
// branch predictor cannot learn, so it is computed with a mask. (The
// compiler would not emit a conditional move: the result feeds a load.)
func advance(s uint32, b, m int32) uint32 {
	t := int32(s) - b
	return uint32(t + m&(t>>31))
}

// tuning says where a build switches between ways of finding a free slot,
// in free slots left: above winHi, and between winLo and tailAt, walk the
// preference list one slot at a time (probeTurns); between winHi and winLo,
// four slots at a time (probeTurnsWindow); at tailAt and below, scan the
// list of free slots (takeFromList). It never changes the result.
type tuning struct {
	winHi, winLo, tailAt uint32
}

// defaultTuning is the tuning Build uses for a table of size m. The
// figures come from timing each phase of a build with M = 65537 and 1000
// backends on an AMD EPYC (Zen 5).
func defaultTuning(m uint32) tuning {
	// Walking the list costs about m/free steps per entry, scanning the
	// free list about free cheaper steps: they cross near sqrt(m).
	r := uint32(1)
	for r*r < m {
		r++
	}
	return tuning{
		winHi:  uint32(uint64(m) * 8 / 10),
		winLo:  m / 10,
		tailAt: r,
	}
}

// filler places entries for populate. A turn of backend k puts it at the
// first free slot of its preference list pos, pos+skip, pos+2*skip, ...
// (mod M) and moves its cursor one step past that slot.
//
// While many slots are free it walks the list, testing a bitmap of filled
// slots (M/8 bytes, in L1 for the default M). That takes about M/free steps,
// so the last few hundred entries would cost as much as all the others. Once
// few slots are free (tuning.tailAt) it keeps them in a list instead, and
// finds the first one along the preference list directly (nearestFree).
type filler struct {
	m      uint32
	tune   tuning
	owner  []uint16 // the table being filled
	filled []uint64 // bit s set: slot s taken; the bits past m are set; len is a power of 2
	cur    []cursor // per backend
	left   uint32   // free slots

	// Tail mode.
	tail  bool     // free is valid
	free  []uint32 // the free slots, in no particular order
	scale []uint64 // per backend: see nearestFree; 0 until first needed
}

func newFiller(owner []uint16, n int, tune tuning) *filler {
	m := uint32(len(owner))
	// The bitmap has a power-of-two number of words, so that the probe
	// loops can mask an index instead of checking it against the length.
	words := int(m+63) / 64
	f := &filler{
		m:      m,
		tune:   tune,
		owner:  owner,
		filled: make([]uint64, 1<<bits.Len(uint(words-1))),
		cur:    make([]cursor, n),
		left:   m,
	}
	if r := m % 64; r != 0 {
		f.filled[words-1] = ^uint64(0) << r
	}
	for i := words; i < len(f.filled); i++ {
		f.filled[i] = ^uint64(0)
	}
	return f
}

// play gives the backends in order one turn each, and stops early when the
// table is full. It returns how many of them played.
func (f *filler) play(order []uint16) int {
	p := 0
	for p < len(order) && f.left > 0 {
		t := f.tune
		if f.left <= t.tailAt {
			if !f.tail {
				f.enterTail()
			}
			k := order[p]
			f.owner[f.takeFromList(k)] = k
			f.left--
			p++
			continue
		}
		// Play up to the next switch.
		probe, stop := probeTurns, t.tailAt
		switch {
		case f.left > t.winHi:
			stop = max(stop, t.winHi)
		case f.left > t.winLo:
			probe, stop = probeTurnsWindow, max(stop, t.winLo)
		}
		n := min(len(order)-p, int(f.left-stop))
		probe(order[p:p+n], f.cur, f.filled, f.owner)
		p += n
		f.left -= uint32(n)
	}
	return p
}

// probeTurns plays all turns in order by walking each preference list until
// a free slot. The caller makes sure there is a free slot for each. It takes
// its state as arguments, and keeps few values live, so that its locals stay
// in registers.
func probeTurns(order []uint16, cur []cursor, filled []uint64, owner []uint16) {
	m := int32(len(owner))
	mask := uint64(uint32(len(filled) - 1)) // see below
	filled = filled[:mask+1]
	for _, k := range order {
		c := &cur[k]
		s := c.pos
		if filled[uint64(s>>6)&mask]&(1<<(s&63)) != 0 {
			s = probeOn(filled, s, c, m)
		}
		filled[uint64(s>>6)&mask] |= 1 << (s & 63)
		owner[s] = k
		c.pos = advance(s, int32(c.back[1]), m)
	}
}

// The probe loops below index the bitmap as filled[uint64(s>>6)&mask] after
// filled = filled[:mask+1], mask = uint64(uint32(len(filled)-1)). len(filled)
// is a power of two, so the mask changes nothing, but it lets the compiler
// drop the bounds checks (mask+1 cannot overflow, so it knows index < len).

// probeOn returns the first free slot after the filled slot s on c's
// preference list. It takes four steps per iteration, all from s, which cuts
// the chain of dependent instructions to a quarter; kept out of line, its
// loop has the registers to itself.
//
//go:noinline
func probeOn(filled []uint64, s uint32, c *cursor, m int32) uint32 {
	mask := uint64(uint32(len(filled) - 1))
	filled = filled[:mask+1]
	b1, b2, b3, b4 := int32(c.back[1]), int32(c.back[2]), int32(c.back[3]), int32(c.back[4])
	for {
		s1 := advance(s, b1, m)
		s2 := advance(s, b2, m)
		s3 := advance(s, b3, m)
		s4 := advance(s, b4, m)
		if filled[uint64(s1>>6)&mask]&(1<<(s1&63)) == 0 {
			return s1
		}
		if filled[uint64(s2>>6)&mask]&(1<<(s2&63)) == 0 {
			return s2
		}
		if filled[uint64(s3>>6)&mask]&(1<<(s3&63)) == 0 {
			return s3
		}
		if filled[uint64(s4>>6)&mask]&(1<<(s4&63)) == 0 {
			return s4
		}
		s = s4
	}
}

// probeTurnsWindow does what probeTurns does. It tests four slots of a
// preference list at a time and picks the first free one without a branch,
// so that a table between a fifth and nine tenths full, where whether the
// next slot is free is a coin toss, costs few mispredicted branches (each
// costs as much as a dozen slot tests).
func probeTurnsWindow(order []uint16, cur []cursor, filled []uint64, owner []uint16) {
	m := int32(len(owner))
	mask := uint64(uint32(len(filled) - 1))
	filled = filled[:mask+1]
	for _, k := range order {
		c := &cur[k]
		s := c.pos
		for {
			s1 := advance(s, int32(c.back[1]), m)
			s2 := advance(s, int32(c.back[2]), m)
			s3 := advance(s, int32(c.back[3]), m)
			t := filled[uint64(s>>6)&mask]>>(s&63)&1 |
				filled[uint64(s1>>6)&mask]>>(s1&63)&1<<1 |
				filled[uint64(s2>>6)&mask]>>(s2&63)&1<<2 |
				filled[uint64(s3>>6)&mask]>>(s3&63)&1<<3
			if t != 15 {
				// Move on by the index of the first free one.
				s = advance(s, int32(c.back[bits.TrailingZeros64(^t)&3]), m)
				break
			}
			s = advance(s, int32(c.back[4]), m)
		}
		filled[uint64(s>>6)&mask] |= 1 << (s & 63)
		owner[s] = k
		c.pos = advance(s, int32(c.back[1]), m)
	}
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
	if f.scale == nil {
		f.scale = make([]uint64, len(f.cur))
	}
}

// takeFromList places backend k at the free slot nearest along its
// preference list and returns the slot.
func (f *filler) takeFromList(k uint16) uint32 {
	c := &f.cur[k]
	scale := f.scale[k]
	if scale == 0 {
		scale = stepScale(f.m-c.back[1], f.m)
		f.scale[k] = scale
	}
	at := nearestFree(f.free, c.pos, f.m, scale)
	s := f.free[at]
	last := len(f.free) - 1
	f.free[at] = f.free[last]
	f.free = f.free[:last]
	f.filled[s>>6] |= 1 << (s & 63)
	c.pos = advance(s, int32(c.back[1]), int32(f.m))
	return s
}

// nearestFree returns the index in free of the slot fewest steps from pos
// along a preference list in a table of size m <= MaxM; scale is
// stepScale(skip, m) and free is not empty.
//
// Slot s lies j = (s - pos) * skip^-1 mod m steps from pos. With
// scale = floor(skip^-1 * 2^64 / m), the wrapping product d*scale for
// d = (s - pos) mod m equals j * 2^64/m - e with 0 <= e < d < 2^24 (and is 0
// for d = 0). Distances j differ by multiples of 2^64/m >= 2^40, so the
// products order the slots exactly as j does, even with their low 32 bits
// replaced by the index. One multiplication per slot, and no branch.
func nearestFree(free []uint32, pos, m uint32, scale uint64) int {
	best := ^uint64(0)
	for i, s := range free {
		d := int32(s) - int32(pos)
		d += int32(m) & (d >> 31)
		best = min(best, uint64(d)*scale&^0xffffffff|uint64(i))
	}
	return int(uint32(best))
}

// stepScale returns floor((skip^-1 mod m) * 2^64 / m), for nearestFree.
func stepScale(skip, m uint32) uint64 {
	q, _ := bits.Div64(uint64(modInverse(skip, m)), 0, uint64(m))
	return q
}

// modInverse returns x^-1 mod m for 0 < x < m, m prime (extended Euclid).
// The coefficients stay within (-m, m), so int32 holds them.
func modInverse(x, m uint32) uint32 {
	a, b := x, m
	u, v := int32(1), int32(0) // u*x = a and v*x = b (mod m)
	for b != 0 {
		q := a / b
		a, b = b, a-q*b
		u, v = v, u-int32(q)*v
	}
	// a == gcd(x, m) == 1
	if u < 0 {
		u += int32(m)
	}
	return uint32(u)
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
