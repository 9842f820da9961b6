package maglev

import "slices"

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
// The backends that play every round are kept in a list; the others wait in
// a min-heap keyed by (round of their next turn, index), so scheduling costs
// O(M) with equal weights and O(M log N) at worst. Placing costs the probes
// along the preference lists, see filler.
//
// tailAt is the number of free slots below which the filler switches from
// probing to scanning the free list (defaultTail in Build; tests vary it).
func populate(owner []uint16, counts []int32, backends []Backend, seed uint64, tailAt uint32) {
	m := uint32(len(owner))
	var maxW uint32
	for _, b := range backends {
		maxW = max(maxW, b.Weight)
	}
	if maxW == 0 {
		for s := range owner {
			owner[s] = NoBackend
		}
		return
	}
	n, drained := len(backends), 0

	// Every backend k has a cursor, and either plays every round (full) or
	// waits in part for the round of its next turn.
	f := newFiller(owner, n, tailAt)
	full := make([]uint16, 0, n)
	part := make(keyHeap, 0, n)
	for k, b := range backends {
		off, skip := Permutation(seed, b.Name, m)
		f.cur[k] = cursor{pos: off, skip: skip}
		switch b.Weight {
		case 0:
			drained++
			full = append(full, uint16(k))
		case maxW:
			full = append(full, uint16(k))
		default:
			part.push(turnKey(nextRound(0, maxW, b.Weight), k))
		}
	}
	order := make([]uint16, 0, n) // turns of the current round
	maxRound := 2 * uint64(m)     // see below
	for round := uint64(1); ; round++ {
		// This round's turns: full merged with the partial-weight backends
		// whose turn falls in it, which leave the heap in index order.
		order = order[:0]
		i := 0
		for len(part) > 0 && part[0]>>16 == round {
			k := uint16(part.pop())
			for i < len(full) && full[i] < k {
				order = append(order, full[i])
				i++
			}
			order = append(order, k)
		}
		order = append(order, full[i:]...)

		for p := 0; p < len(order); {
			p += f.play(order[p:])
			if f.left > 0 {
				break // p == len(order)
			}
			if drained == 0 {
				goto done
			}
			// The table is full with the drained backends in it: free
			// their slots and let the others go on from the next turn.
			f.freeOwnedBy(func(k uint16) bool { return backends[k].Weight == 0 })
			drained = 0
			if f.left == 0 {
				goto done
			}
			full = slices.DeleteFunc(full, func(k uint16) bool { return backends[k].Weight == 0 })
			rest := slices.DeleteFunc(order[p:], func(k uint16) bool { return backends[k].Weight == 0 })
			order = order[:p+len(rest)]
		}
		// Schedule the next turn of the partial-weight backends that
		// played. Every round places at least one entry (a live backend of
		// weight W plays in each), so the first pass ends by round M and
		// the refill of drained slots within M more: later turns never come.
		for _, k := range order {
			if w := backends[k].Weight; w != maxW && w != 0 {
				if r := nextRound(f.turns[k], maxW, w); r <= maxRound {
					part.push(turnKey(r, int(k)))
				}
			}
		}
	}
done:
	for k, t := range f.turns {
		if backends[k].Weight > 0 {
			counts[k] = int32(t)
		}
	}
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

// keyHeap is a binary min-heap of turn keys.
type keyHeap []uint64

func (h *keyHeap) push(x uint64) {
	a := append(*h, x)
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p] <= x {
			break
		}
		a[i] = a[p]
		i = p
	}
	a[i] = x
	*h = a
}

// pop removes the smallest key and returns its low 16 bits (the backend).
func (h *keyHeap) pop() uint64 {
	a := *h
	top := a[0]
	n := len(a) - 1
	x := a[n]
	a = a[:n]
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
	if n > 0 {
		a[i] = x
	}
	*h = a
	return top & 0xffff
}
