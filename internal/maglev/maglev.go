package maglev

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
)

// DefaultM is the table size used when Options.M is 0. It is prime.
const DefaultM = 65537

// MaxM is the largest accepted table size (Options.M).
const MaxM = 1 << 24

// MaxBackends is the largest number of entries Backends() may have. Indices
// are uint16 and NoBackend (0xFFFF) is reserved.
const MaxBackends = 65535 - 1

// NoBackend is the index returned for a slot without an owner (an empty
// table) or without a previous owner.
const NoBackend uint16 = 0xFFFF

// Backend is one table member. Name is its stable identity (e.g. its address
// "198.18.1.10" or "[2001:db8::10]:6080"); the permutation derives from a
// seeded hash of Name only, never from the position in the input. Weight 0
// means "no new flows": the backend is not placed in the table (but may still
// appear as a previous owner).
type Backend struct {
	Name   string
	Weight uint32
}

// Options configure Build.
type Options struct {
	// M is the table size. It must be prime, larger than the number of
	// backends and at most MaxM; 0 means DefaultM. Balance is the caller's
	// concern: max/mean slots per backend stays within 1% when M >= 100 x
	// backends.
	M uint32
	// Seed is the cluster-wide seed of the name hash, identical on all nodes.
	Seed uint64
	// Inherit, if non-nil, is a table of the same M whose previous owners
	// the new table keeps for the slots that prev gives no other previous
	// owner (previous == owner, or none): a slot's previous owner is then
	// the last owner it had before its current one, across any number of
	// builds in which it did not change. Resolved by Name like prev.
	Inherit *Table
}

// Table is a Maglev lookup table, made by Build. It is immutable once built
// and safe for concurrent use by any number of readers. The zero Table is
// not usable.
type Table struct {
	// Set by Build, never written again.
	m    uint32
	seed uint64
	red  reducer // computes hash % m

	// owner[s] and previous[s] index backends; both have length m.
	owner    []uint16
	previous []uint16

	// backends[:nInput] are the backends given to Build, sorted by Name;
	// backends[nInput:] are previous owners that are no longer members,
	// sorted by Name, with Weight 0.
	backends []Backend
	nInput   int
	counts   []int32 // slots owned, per backends index

	// Computed on first use of Fingerprint, by whichever reader comes first.
	fpOnce sync.Once // guards fp
	fp     uint64
}

// Build returns a table for backends. The order of backends does not matter:
// Build works on them sorted by Name, so every node given the same set, Seed
// and M builds the same table.
//
// prev, if non-nil, is the table this one replaces and must have the same M:
// every slot records the owner it had in prev (see Slot), resolved by Name. A
// previous owner that is not in backends is appended to Backends() with
// Weight 0 so that it can still be referenced.
//
// Errors: an empty or duplicate Name (*BackendError wrapping ErrEmptyName or
// ErrDuplicateName), a bad M (ErrInvalidM), more than MaxBackends backends
// (ErrTooManyBackends), prev of another size (ErrPrevSize). All weights 0 is
// not an error: the table is then empty and Lookup returns NoBackend.
func Build(backends []Backend, opts Options, prev *Table) (*Table, error) {
	m := opts.M
	if m == 0 {
		m = DefaultM
	}
	if len(backends) > MaxBackends {
		return nil, fmt.Errorf("maglev: %d backends, at most %d: %w", len(backends), MaxBackends, ErrTooManyBackends)
	}
	if err := checkM(m, len(backends)); err != nil {
		return nil, err
	}
	if prev != nil && prev.m != m {
		return nil, fmt.Errorf("maglev: M=%d, previous table M=%d: %w", m, prev.m, ErrPrevSize)
	}

	sorted := sortByName(backends)
	if err := checkNames(sorted, backends); err != nil {
		return nil, err
	}

	t := &Table{
		m:        m,
		seed:     opts.Seed,
		red:      newReducer(m),
		owner:    make([]uint16, m),
		previous: make([]uint16, m),
		backends: sorted,
		nInput:   len(sorted),
	}
	counts := make([]int32, len(sorted))
	populate(t.owner, counts, sorted, opts.Seed, defaultTuning(m))
	if prev == nil {
		fillNoBackend(t.previous)
	} else {
		var err error
		if counts, err = t.resolvePrevious(prev, counts); err != nil {
			return nil, err
		}
	}
	if in := opts.Inherit; in != nil {
		if in.m != m {
			return nil, fmt.Errorf("maglev: M=%d, inherited table M=%d: %w", m, in.m, ErrPrevSize)
		}
		var err error
		if counts, err = t.inherit(in, counts); err != nil {
			return nil, err
		}
	}
	t.counts = counts
	return t, nil
}

// inherit sets previous[s] to in's previous owner of slot s, by Name, where
// t has none other than the owner itself and in's differs from t's owner.
// It returns counts extended to the new length of t.backends.
func (t *Table) inherit(in *Table, counts []int32) ([]int32, error) {
	idx := make(map[string]uint16, len(t.backends))
	for i, b := range t.backends {
		idx[b.Name] = uint16(i)
	}
	tr := make([]uint16, len(in.backends)) // in's index -> t's, resolved lazily
	for i := range tr {
		tr[i] = NoBackend - 1 // not yet resolved
	}
	for s := range t.owner {
		o, p := t.owner[s], t.previous[s]
		if p != NoBackend && p != o {
			continue
		}
		ip := in.previous[s]
		if ip == NoBackend {
			continue
		}
		if tr[ip] == NoBackend-1 {
			name := in.backends[ip].Name
			j, ok := idx[name]
			if !ok {
				if len(t.backends) >= MaxBackends {
					return nil, fmt.Errorf("maglev: %d backends and previous owners, at most %d: %w",
						len(t.backends)+1, MaxBackends, ErrTooManyBackends)
				}
				j = uint16(len(t.backends))
				t.backends = append(t.backends, Backend{Name: name})
				counts = append(counts, 0)
				idx[name] = j
			}
			tr[ip] = j
		}
		if j := tr[ip]; j != o {
			t.previous[s] = j
		}
	}
	return counts, nil
}

func cmpName(a, b Backend) int { return strings.Compare(a.Name, b.Name) }

// sortByName returns a copy of backends sorted by Name. It compares the
// first 16 bytes of the names as two integers (zero-padded, big-endian,
// which orders as the bytes do) and only compares whole strings on a tie.
func sortByName(backends []Backend) []Backend {
	sorted := make([]Backend, len(backends))
	if slices.IsSortedFunc(backends, cmpName) {
		copy(sorted, backends)
		return sorted
	}
	type key struct {
		p0, p1 uint64
		i      int
	}
	keys := make([]key, len(backends))
	for i, b := range backends {
		var p [16]byte
		copy(p[:], b.Name)
		keys[i] = key{binary.BigEndian.Uint64(p[:8]), binary.BigEndian.Uint64(p[8:]), i}
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.p0 != b.p0 {
			return cmp.Compare(a.p0, b.p0)
		}
		if a.p1 != b.p1 {
			return cmp.Compare(a.p1, b.p1)
		}
		return strings.Compare(backends[a.i].Name, backends[b.i].Name)
	})
	for i, k := range keys {
		sorted[i] = backends[k.i]
	}
	return sorted
}

// fillNoBackend sets every element of a to NoBackend.
func fillNoBackend(a []uint16) {
	if len(a) == 0 {
		return
	}
	a[0] = NoBackend
	for n := 1; n < len(a); n *= 2 {
		copy(a[n:], a[:n])
	}
}

// checkM validates the table size for n backends.
func checkM(m uint32, n int) error {
	switch {
	case m < 2 || m > MaxM:
		return fmt.Errorf("maglev: M=%d: %w: must be in [2, %d]", m, ErrInvalidM, MaxM)
	case !IsPrime(m):
		return fmt.Errorf("maglev: M=%d: %w: not prime", m, ErrInvalidM)
	case uint64(m) <= uint64(n):
		return fmt.Errorf("maglev: M=%d: %w: must exceed the number of backends (%d)", m, ErrInvalidM, n)
	}
	return nil
}

// IsPrime reports whether m is prime, by trial division (for m <= MaxM, at
// most about 2000 divisions). Configuration validation uses it to reject a
// table size Build would refuse.
func IsPrime(m uint32) bool {
	if m < 2 {
		return false
	}
	if m%2 == 0 {
		return m == 2
	}
	for d := uint32(3); d*d <= m; d += 2 {
		if m%d == 0 {
			return false
		}
	}
	return true
}

// checkNames rejects empty and duplicate names in sorted; input is the
// caller's slice, searched only to name the culprit in the error.
func checkNames(sorted, input []Backend) error {
	find := func(name string, skip int) int {
		for i, b := range input {
			if b.Name == name && i != skip {
				return i
			}
		}
		return -1
	}
	if len(sorted) > 0 && sorted[0].Name == "" {
		i := find("", -1)
		return &BackendError{Index: i, Name: "", Err: ErrEmptyName}
	}
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Name == sorted[i-1].Name {
			name := sorted[i].Name
			first := find(name, -1)
			second := find(name, first)
			return &BackendError{Index: second, Name: name,
				Err: fmt.Errorf("%w (same as backends[%d])", ErrDuplicateName, first)}
		}
	}
	return nil
}

// resolvePrevious fills t.previous from prev.owner, translating prev's
// indices to t's by Name, and appends the previous owners that left the set.
// It returns counts extended to the new length of t.backends.
func (t *Table) resolvePrevious(prev *Table, counts []int32) ([]int32, error) {
	// Owners in prev are always among its input backends, which are sorted
	// by Name like t's: merge the two sorted lists.
	old := prev.backends[:prev.nInput]
	tr := make([]uint16, len(old))
	cur := t.backends[:t.nInput]
	j := 0
	for i, b := range old {
		for j < len(cur) && cur[j].Name < b.Name {
			j++
		}
		switch {
		case j < len(cur) && cur[j].Name == b.Name:
			tr[i] = uint16(j)
		case prev.counts[i] > 0:
			if len(t.backends) >= MaxBackends {
				return nil, fmt.Errorf("maglev: %d backends and previous owners, at most %d: %w",
					len(t.backends)+1, MaxBackends, ErrTooManyBackends)
			}
			tr[i] = uint16(len(t.backends))
			t.backends = append(t.backends, Backend{Name: b.Name})
			counts = append(counts, 0)
		default:
			tr[i] = NoBackend // owned nothing in prev, so never looked up
		}
	}
	for s, o := range prev.owner {
		if o == NoBackend {
			t.previous[s] = NoBackend
		} else {
			t.previous[s] = tr[o]
		}
	}
	return counts, nil
}

// M returns the table size.
func (t *Table) M() uint32 { return t.m }

// Seed returns the seed the table was built with.
func (t *Table) Seed() uint64 { return t.seed }

// Lookup returns the index (into Backends) of the owner of slot hash % M,
// or NoBackend if the table is empty. The reduction is exactly hash % M,
// computed without a division (see reducer).
func (t *Table) Lookup(hash uint64) uint16 {
	return t.owner[t.red.mod(hash)]
}

// Slot returns the owner of slot hash % M and the owner that slot had in the
// table this one replaced (previous == owner if it did not change; NoBackend
// if it had none or Build was given no previous table).
func (t *Table) Slot(hash uint64) (owner, previous uint16) {
	s := t.red.mod(hash)
	return t.owner[s], t.previous[s]
}

// SlotIndex returns the slot Slot and Lookup read for hash, for tools.
func (t *Table) SlotIndex(hash uint64) uint32 { return uint32(t.red.mod(hash)) }

// Owner returns the owner of slot s (0 <= s < M), for tools and tests.
func (t *Table) Owner(s uint32) uint16 { return t.owner[s] }

// Previous returns the previous owner of slot s (0 <= s < M).
func (t *Table) Previous(s uint32) uint16 { return t.previous[s] }

// Backends returns a copy of the backend list that indices returned by
// Lookup and Slot refer to: first the backends given to Build, sorted by
// Name, then the previous owners that are no longer members, sorted by Name,
// with Weight 0. It allocates; use Backend(i) on a hot path.
func (t *Table) Backends() []Backend { return slices.Clone(t.backends) }

// NumBackends returns len(Backends()).
func (t *Table) NumBackends() int { return len(t.backends) }

// Backend returns Backends()[i] without copying the list. It panics if i is
// out of range (including NoBackend).
func (t *Table) Backend(i uint16) Backend { return t.backends[i] }

// Index returns the index of the backend called name in Backends().
func (t *Table) Index(name string) (uint16, bool) {
	if i, ok := slices.BinarySearchFunc(t.backends[:t.nInput], name, cmpBackendName); ok {
		return uint16(i), true
	}
	if i, ok := slices.BinarySearchFunc(t.backends[t.nInput:], name, cmpBackendName); ok {
		return uint16(t.nInput + i), true
	}
	return NoBackend, false
}

func cmpBackendName(b Backend, name string) int { return strings.Compare(b.Name, name) }

// Count returns the number of slots backend i owns (0 for an unknown i).
func (t *Table) Count(i uint16) int {
	if int(i) >= len(t.counts) {
		return 0
	}
	return int(t.counts[i])
}

// Fingerprint returns a 64-bit digest of the table's content: M, Seed, and
// for each slot in order the Names of its owner and previous owner. Tables
// with equal content have equal fingerprints in any process, whatever the
// order of the input; nodes can compare them to check they agree. It is
// computed on first use (about 0.15 ms for M = 65537), in four lanes so that
// the multiplications overlap:
//
//	d(name) = mix64(FNV-1a-64(name)); d(NoBackend) = d("")
//	h[l]    = mix64(mix64(uint64(M) + (l+1)*golden) ^ Seed)    for l = 0..3
//	for s in 0..M-1:
//	    h[s%4] = mix64(h[s%4] ^ d(owner[s]) ^ rotl64(d(previous[s]), 32))
//	fingerprint = mix64(mix64(mix64(mix64(h[0]) ^ h[1]) ^ h[2]) ^ h[3])
//
// (uint64 arithmetic wrapping; mix64 and golden as in Permutation.)
func (t *Table) Fingerprint() uint64 {
	t.fpOnce.Do(func() { t.fp = t.fingerprint() })
	return t.fp
}

// OwnersFingerprint is a digest of every slot's owner (by name) alone:
// tables that give every slot the same owner have the same, whatever their
// previous owners. It is computed on every call.
func (t *Table) OwnersFingerprint() uint64 {
	last := uint16(len(t.backends))
	d := make([]uint64, len(t.backends)+1)
	for i, b := range t.backends {
		d[i] = nameDigest(b.Name)
	}
	d[last] = nameDigest("")
	h := mix64(uint64(t.m) ^ t.seed)
	for _, o := range t.owner {
		h = mix64(h ^ d[min(o, last)])
	}
	return h
}

func (t *Table) fingerprint() uint64 {
	// Digests by index; NoBackend maps to the extra last entry.
	last := uint16(len(t.backends))
	d := make([]uint64, len(t.backends)+1)
	for i, b := range t.backends {
		d[i] = nameDigest(b.Name)
	}
	d[last] = nameDigest("")
	dig := func(s int) uint64 {
		o, p := min(t.owner[s], last), min(t.previous[s], last)
		return d[o] ^ bits.RotateLeft64(d[p], 32)
	}
	var h [4]uint64
	for l := range h {
		h[l] = mix64(mix64(uint64(t.m)+uint64(l+1)*golden) ^ t.seed)
	}
	s := 0
	for ; s+4 <= len(t.owner); s += 4 {
		h[0] = mix64(h[0] ^ dig(s))
		h[1] = mix64(h[1] ^ dig(s+1))
		h[2] = mix64(h[2] ^ dig(s+2))
		h[3] = mix64(h[3] ^ dig(s+3))
	}
	for ; s < len(t.owner); s++ {
		h[s%4] = mix64(h[s%4] ^ dig(s))
	}
	return mix64(mix64(mix64(mix64(h[0])^h[1])^h[2]) ^ h[3])
}
