//go:build amd64 && !purego

package flow

// prefetchHomes issues prefetch instructions for the first cache lines of the
// probe of every hash: four lines from the start of the home slot, 256 bytes,
// which cover the entry sought unless it sits more than four slots from home
// (the mean distance is 2.5 slots at load 5/6). Unlike a load, a prefetch
// retires without waiting for its line, so one core keeps dozens of misses in
// flight where a loop of loads stalls once the reorder buffer fills. It
// returns 0 (see the portable version).
//
//go:noescape
func prefetchHomes(base *Entry, nslots uint64, hashes []uint64) uint32
