// Package maglev builds weighted Maglev lookup tables: the map from a flow
// hash to a backend that every Sluice LB node computes identically
// (DESIGN.md §3.1), after Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, §3.4.
//
// # Contract
//
// A Table's owners are a function of the backend set (names and weights),
// Options.M and Options.Seed, and of nothing else: not of the order of the
// input, the Go version, the architecture or the process (its previous
// owners also depend on the table it replaces). Build sorts the backends by Name (byte-wise,
// as strings compare) and derives each backend's preference list from a
// seeded hash of its Name alone, written out in this package (NameHash and
// Permutation document it exactly) so that it never changes under us. Two
// nodes given the same set build byte-identical owner arrays; Fingerprint
// lets them check that cheaply.
//
// A hash maps to slot hash % M, exactly. Lookup computes the remainder by
// Barrett reduction, which gives the same value as the % operator for every
// hash (the tests check it) without a division instruction.
//
// # Population
//
// With equal weights the table is the paper's Pseudocode 1: backends take
// turns in Name order, each taking the first still-free slot of its
// preference list (offset + j*skip) % M, until all M slots are taken; each
// backend then owns floor(M/N) or ceil(M/N) slots. With weights, a backend
// of weight w takes a turn in the rounds where its credit, growing by w per
// round, reaches the largest weight W (its k-th turn is in round
// ceil(k*W/w)), so it owns about w/W as many slots as the heaviest.
//
// A backend of weight 0 is drained: it owns no slot and gets no new flows.
// So that draining disturbs nothing else, it first fills the table as if it
// had weight W, and its slots are then handed to the others by continuing
// the rounds without it. Draining a backend that had the largest weight
// (all backends, when weights are equal) therefore moves only that
// backend's slots. Removing a backend from the set rebuilds the table
// without it, which moves more than its slots: Maglev is not minimally
// disruptive (the tests measure it; with 1000 backends and M = 65537 about
// seven times the ideal 1/N of the slots change owner). Drain first, then
// remove.
//
// # Previous owners
//
// Build takes the table being replaced, and each slot records the owner it
// had there ("previous", the secondary for second chance, DESIGN.md §3.4).
// Previous owners that are no longer in the set stay referable: they follow
// the input backends in Backends(), sorted by Name, with Weight 0. Indices
// therefore mean the same in Lookup, Slot, Backend, Count and Index; the
// owner array does not depend on the previous table.
//
// # Lifetimes and cost
//
// A Table is immutable and safe for concurrent use by any number of
// goroutines; publish a new one (an atomic.Pointer swap) to change it.
// Build keeps no reference to its arguments or to the previous table, which
// may be dropped afterwards. Backends returns a copy. A table costs 4 bytes
// per slot (owner and previous, uint16 each) plus its backend list. Lookup
// and Slot take one or two nanoseconds and allocate nothing. Build takes
// about 0.9 ms of CPU for M = 65537 and 1000 backends of equal weight
// (BenchmarkMaglevBuild reports cpu-ns/op next to ns/op, which on a shared
// machine also counts the time other processes held the core), and
// allocates about 400 KB, two thirds of it the table itself.
package maglev
