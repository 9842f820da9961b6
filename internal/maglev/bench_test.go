package maglev

import "testing"

// BenchmarkMaglevBuild measures the budgeted case (DESIGN §6): M = 65537,
// 1000 backends of equal weight, no previous table.
func BenchmarkMaglevBuild(b *testing.B) {
	bs := equalWeights(testNames(1000), 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(bs, Options{M: DefaultM, Seed: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaglevBuildPrev adds resolving the previous owners of a table in
// which one backend was removed.
func BenchmarkMaglevBuildPrev(b *testing.B) {
	bs := equalWeights(testNames(1001), 100)
	prev := mustBuild(b, bs, Options{Seed: 1}, nil)
	bs = bs[1:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(bs, Options{M: DefaultM, Seed: 1}, prev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaglevBuildWeighted uses weights 1..1000.
func BenchmarkMaglevBuildWeighted(b *testing.B) {
	bs := equalWeights(testNames(1000), 0)
	for i := range bs {
		bs[i].Weight = uint32(i + 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(bs, Options{M: DefaultM, Seed: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaglevBuildDrained has one backend of 1000 at weight 0.
func BenchmarkMaglevBuildDrained(b *testing.B) {
	bs := equalWeights(testNames(1000), 100)
	bs[500].Weight = 0
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(bs, Options{M: DefaultM, Seed: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

var sink uint16

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
