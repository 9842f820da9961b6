//go:build race

package quiclb

// raceEnabled: the race detector drops a share of sync.Pool puts on
// purpose, so pooled buffers are re-allocated and allocation counts mean
// nothing.
const raceEnabled = true
