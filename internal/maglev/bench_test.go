package maglev

import (
	"runtime"
	"testing"
)

// benchBuild runs Build b.N times and, where the thread's CPU time can be
// read, reports it as cpu-ns/op next to the wall-clock ns/op: on a shared
// machine the two differ by the time other processes held the core.
func benchBuild(b *testing.B, bs []Backend, opts Options, prev *Table) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	c0, ok := threadCPU()
	for b.Loop() {
		if _, err := Build(bs, opts, prev); err != nil {
			b.Fatal(err)
		}
	}
	if c1, ok1 := threadCPU(); ok && ok1 {
		b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkMaglevBuild measures the budgeted case (DESIGN §6): M = 65537,
// 1000 backends of equal weight, no previous table.
func BenchmarkMaglevBuild(b *testing.B) {
	benchBuild(b, equalWeights(testNames(1000), 100), Options{M: DefaultM, Seed: 1}, nil)
}

// BenchmarkMaglevBuildPrev adds resolving the previous owners, after one
// backend of 1001 was removed.
func BenchmarkMaglevBuildPrev(b *testing.B) {
	bs := equalWeights(testNames(1001), 100)
	prev := mustBuild(b, bs, Options{Seed: 1}, nil)
	benchBuild(b, bs[1:], Options{M: DefaultM, Seed: 1}, prev)
}

// BenchmarkMaglevBuildWeighted has 1000 backends of weights 1..1000.
func BenchmarkMaglevBuildWeighted(b *testing.B) {
	bs := equalWeights(testNames(1000), 0)
	for i := range bs {
		bs[i].Weight = uint32(i + 1)
	}
	benchBuild(b, bs, Options{M: DefaultM, Seed: 1}, nil)
}

// BenchmarkMaglevBuildDrained has one backend of 1000 at weight 0.
func BenchmarkMaglevBuildDrained(b *testing.B) {
	bs := equalWeights(testNames(1000), 100)
	bs[500].Weight = 0
	benchBuild(b, bs, Options{M: DefaultM, Seed: 1}, nil)
}

var sink uint16

// BenchmarkMaglevLookup looks up a different hash each time (the table
// stays in cache, as it does on a busy LB).
func BenchmarkMaglevLookup(b *testing.B) {
	t := mustBuild(b, equalWeights(testNames(1000), 100), Options{Seed: 1}, nil)
	h := uint64(0x243f6a8885a308d3)
	var acc uint16
	b.ReportAllocs()
	for b.Loop() {
		acc ^= t.Lookup(h)
		h += 0x9e3779b97f4a7c15
	}
	sink = acc
}

func BenchmarkMaglevSlot(b *testing.B) {
	t := mustBuild(b, equalWeights(testNames(1000), 100), Options{Seed: 1}, nil)
	h := uint64(0x243f6a8885a308d3)
	var acc uint16
	b.ReportAllocs()
	for b.Loop() {
		o, p := t.Slot(h)
		acc ^= o ^ p
		h += 0x9e3779b97f4a7c15
	}
	sink = acc
}

// BenchmarkMaglevFingerprint measures the first call, which computes it.
func BenchmarkMaglevFingerprint(b *testing.B) {
	bs := equalWeights(testNames(1000), 100)
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		t := mustBuild(b, bs, Options{Seed: 1}, nil)
		b.StartTimer()
		t.Fingerprint()
	}
}
