//go:build linux

package quiclb

import (
	"syscall"
	"time"
)

// threadCPU returns the CPU time (user + system) of the calling thread, to
// measure benchmarks on a shared machine, where wall time also counts the
// time other processes hold the core. The caller locks its OS thread.
func threadCPU() (time.Duration, bool) {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
