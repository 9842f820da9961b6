package pipeline

import "testing"

func TestTokenBucket(t *testing.T) {
	var b TokenBucket
	const rate = 100          // burst 11
	now := uint32(0xffffff00) // refills across the clock's wrap
	n := 0
	for b.Allow(now, rate) {
		n++
	}
	if n != 11 {
		t.Fatalf("burst of %d, want 11", n)
	}
	now += 10 // 10 ms at 100/s: one token
	if !b.Allow(now, rate) || b.Allow(now, rate) {
		t.Fatal("10 ms should refill exactly one token")
	}
	now += 1 << 10 // long idle: full again, not more
	n = 0
	for b.Allow(now, rate) {
		n++
	}
	if n != 11 {
		t.Fatalf("after a long idle: burst of %d, want 11", n)
	}
}
