package maglev

import (
	"math/bits"
	"slices"
)

// populate fills owner (length M) with indices into backends, which are
// sorted by Name, and counts[i] with the number of slots backends[i] got.
//
// This is Pseudocode 1 of the Maglev paper (Eisenbud et al., NSDI 2016,
// §3.4) extended with weights. Backends take turns in rounds, in index
// order; a turn places the backend at the first slot of its preference list
// (see Permutation) that is still free. Let W be the largest weight. Every
// backend of weight w > 0 accrues credit w each round and takes a turn when
// its credit reaches W, paying W for it: its k-th turn falls in round
// ceil(k*W/w). With equal weights every backend plays every round, which is
// plain Maglev.
//
// A backend of weight 0 (drained) first plays as if its weight were W, so
// that the table fills exactly as it would if the backend were still live at
// the largest weight. Its slots are then freed and the rounds go on, without
// it, from the turn where they stopped until every slot is taken again.
// Draining a backend of weight W (the common case: equal weights) therefore
// moves only that backend's slots. If no backend has a weight > 0, every
// slot is NoBackend.
//
// Scheduling: backends of weight W (and the drained) play every round; one
// that plays at least every eighth round (w >= W/8) has its credit checked
// every round, which costs at most eight checks per turn; the rarer ones
// wait in a min-heap keyed by (round of their next turn, index). So equal
// weights cost O(M) and the worst case O(M log N). Placing costs the probes
// along the preference lists, see filler.
//
// tune only changes the speed (see filler): Build passes defaultTuning(M),
// tests vary it.
func populate(owner []uint16, counts []int32, backends []Backend, seed uint64, tune tuning) {
	m := uint32(len(owner))
	var maxW uint32
	for _, b := range backends {
		maxW = max(maxW, b.Weight)
	}
	if maxW == 0 {
		fillNoBackend(owner)
		return
	}
	n, drained := len(backends), 0

	f := newFiller(owner, n, tune)
	full := make([]uint16, 0, n) // play every round: weight maxW, and the drained
	part := make([]player, 0, n) // credit checked every round
	rare := newKeyHeap(n)
	h0, modM, modM1 := seedState(seed), newReducer(m), newReducer(m-1)
	for k, b := range backends {
		off, skip := permutation(fnv1a64(h0, b.Name), modM, modM1)
		f.cur[k] = newCursor(off, skip, m)
		switch w := b.Weight; {
		case w == 0:
			drained++
			full = append(full, uint16(k))
		case w == maxW:
			full = append(full, uint16(k))
		case uint64(w)*8 >= uint64(maxW):
			part = append(part, player{k: uint16(k), w: w})
		default:
			rare.push(turnKey(nextRound(0, maxW, w), k))
		}
	}
	order := make([]uint16, 0, n)  // turns of the current round
	var inRound, fullBits []uint64 // bit k: backend k plays (this round, every round)
	if len(part) > 0 || rare.n > 0 {
		inRound, fullBits = make([]uint64, (n+63)/64), make([]uint64, (n+63)/64)
		for _, k := range full {
			fullBits[k>>6] |= 1 << (k & 63)
		}
	}
	var rareDue []uint16
	rareTurns := make([]uint32, n)
	maxRound := 2 * uint64(m) // see below
	for round := uint64(1); ; round++ {
		// This round's turns, in index order.
		if inRound == nil {
			order = append(order[:0], full...)
		} else {
			// full, the part players whose credit reaches maxW and the
			// rare backends whose turn falls in this round, as a bitmap.
			// No branch depends on whether a player plays: that is a
			// coin toss.
			copy(inRound, fullBits)
			for i := range part {
				p := &part[i]
				c := uint64(p.credit) + uint64(p.w)
				plays := uint64(0)
				if c >= uint64(maxW) {
					plays = 1
				}
				p.credit = uint32(c - plays*uint64(maxW))
				inRound[p.k>>6] |= plays << (p.k & 63)
			}
			rareDue = rareDue[:0]
			for rare.n > 0 && rare.a[0]>>16 == round {
				k := uint16(rare.pop())
				rareDue = append(rareDue, k)
				inRound[k>>6] |= 1 << (k & 63)
			}
			order = order[:0]
			for i, w := range inRound {
				for ; w != 0; w &= w - 1 {
					order = append(order, uint16(i*64+bits.TrailingZeros64(w)))
				}
			}
		}

		for p := 0; p < len(order); {
			p += f.play(order[p:])
			if f.left > 0 {
				break // p == len(order)
			}
			if drained == 0 {
				// Done, part way through the round or at its end.
				for _, k := range owner {
					counts[k]++
				}
				return
			}
			// The table is full with the drained backends in it: free their
			// slots and let the others go on from the next turn.
			drained = 0
			isDrained := func(k uint16) bool { return backends[k].Weight == 0 }
			f.freeOwnedBy(isDrained)
			full = slices.DeleteFunc(full, isDrained)
			if fullBits != nil {
				clear(fullBits)
				for _, k := range full {
					fullBits[k>>6] |= 1 << (k & 63)
				}
			}
			rest := slices.DeleteFunc(order[p:], isDrained)
			order = order[:p+len(rest)]
		}
		// Schedule the next turn of the rare backends that played. Every
		// round places at least one entry (a live backend of weight maxW
		// plays in each), so the first pass ends by round M and the
		// refill of drained slots within M more: later turns never come.
		for _, k := range rareDue {
			rareTurns[k]++
			if r := nextRound(rareTurns[k], maxW, backends[k].Weight); r <= maxRound {
				rare.push(turnKey(r, int(k)))
			}
		}
	}
}

// player is a backend whose credit populate checks every round.
type player struct {
	k      uint16
	w      uint32 // weight (maxW for the drained)
	credit uint32 // < maxW between rounds
}

// nextRound is the round of turn number taken+1 of a backend of weight w:
// the smallest r with r*w >= (taken+1)*maxW.
func nextRound(taken, maxW, w uint32) uint64 {
	need := (uint64(taken) + 1) * uint64(maxW)
	return (need + uint64(w) - 1) / uint64(w)
}

// turnKey orders turns by round, then by backend. k < MaxBackends fits in
// 16 bits and rounds are at most 2*MaxM, so keys do not overflow.
func turnKey(round uint64, k int) uint64 { return round<<16 | uint64(k) }

// keyHeap is a binary min-heap of turn keys in a fixed array.
type keyHeap struct {
	a []uint64 // a[:n] is the heap
	n int
}

func newKeyHeap(capacity int) keyHeap { return keyHeap{a: make([]uint64, capacity)} }

func (h *keyHeap) push(x uint64) {
	a := h.a
	i := h.n
	h.n++
	for i > 0 {
		p := (i - 1) / 2
		if a[p] <= x {
			break
		}
		a[i] = a[p]
		i = p
	}
	a[i] = x
}

// pop removes the smallest key and returns its low 16 bits (the backend).
func (h *keyHeap) pop() uint64 {
	a := h.a
	top := a[0]
	h.n--
	n := h.n
	x := a[n]
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && a[c+1] < a[c] {
			c++
		}
		if x <= a[c] {
			break
		}
		a[i] = a[c]
		i = c
	}
	a[i] = x
	return top & 0xffff
}
