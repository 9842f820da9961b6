package maglev
import ("testing"; "runtime"; "syscall"; "time")
func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
func TestTmpCPU(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	bs := equalWeights(testNames(1000), 1)
	tb, _ := Build(bs, Options{}, nil)
	sorted := tb.Backends()
	owner := make([]uint16, DefaultM)
	counts := make([]int32, 1000)
	for _, tail := range []uint32{0, 128, 257, 512} {
		const n = 300
		w0 := time.Now(); c0 := threadCPU()
		for range n { populate(owner, counts, sorted, 1, tail) }
		c1 := threadCPU(); w1 := time.Now()
		t.Logf("populate tail=%d cpu=%v/op wall=%v/op", tail, (c1-c0)/n, w1.Sub(w0)/n)
	}
	const n = 300
	w0 := time.Now(); c0 := threadCPU()
	for range n { Build(bs, Options{}, nil) }
	c1 := threadCPU(); w1 := time.Now()
	t.Logf("Build cpu=%v/op wall=%v/op", (c1-c0)/n, w1.Sub(w0)/n)
}
func BenchmarkTmpPopulate(b *testing.B) {
	bs := equalWeights(testNames(1000), 1)
	tb, _ := Build(bs, Options{}, nil)
	sorted := tb.Backends()
	owner := make([]uint16, DefaultM)
	counts := make([]int32, 1000)
	for b.Loop() { populate(owner, counts, sorted, 1, 257) }
}
