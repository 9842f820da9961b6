package flow

import "syscall"

// threadCPU returns the CPU time the calling thread has used, in
// nanoseconds, or -1 if unknown. The benchmarks report it next to wall time
// because the test machines are shared: a descheduled thread inflates
// ns/op, not cpu-ns/op.
func threadCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return -1
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
