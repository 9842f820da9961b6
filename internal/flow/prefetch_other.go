//go:build !amd64 || purego

package flow

import "unsafe"

// prefetchHomes loads the home slot of every hash, so that the cache misses
// of a batch overlap as far as the core's reorder window allows; it returns
// the loaded values folded, for the caller to keep so the loads stay. (On
// amd64 it is a loop of prefetch instructions, which do not block
// retirement.)
func prefetchHomes(base *Entry, nslots uint64, hashes []uint64) uint32 {
	slots := unsafe.Slice(base, nslots)
	var sink uint32
	for _, h := range hashes {
		sink += uint32(slots[((h>>32)*nslots)>>32].psl)
	}
	return sink
}
