//go:build race

package datapath_test

// raceEnabled: the race detector drops a share of sync.Pool puts on
// purpose, so the AES scratch blocks of quiclb's encrypted modes are
// re-allocated and allocation counts of QUIC routing mean nothing.
const raceEnabled = true
