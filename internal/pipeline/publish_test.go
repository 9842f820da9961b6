package pipeline

import (
	"sync"
	"testing"
)

func TestPublishQueue(t *testing.T) {
	q := NewPublishQueue(3) // rounded up to 4
	for i := range 6 {
		ok := q.Push(&Publish{Backend: uint32(i)})
		if ok != (i < 4) {
			t.Fatalf("push %d: %v", i, ok)
		}
	}
	if p, d := q.Counts(); p != 4 || d != 2 {
		t.Fatalf("counts %d pushed %d dropped", p, d)
	}
	var got []uint32
	if n := q.Drain(func(p *Publish) { got = append(got, p.Backend) }); n != 4 || len(got) != 4 || got[0] != 0 || got[3] != 3 {
		t.Fatalf("drained %d: %v", n, got)
	}
	if !q.Push(&Publish{Backend: 9}) {
		t.Fatal("no room after a drain")
	}
	if allocs := testing.AllocsPerRun(100, func() { q.Push(&Publish{}); q.Drain(func(*Publish) {}) }); allocs != 0 {
		t.Errorf("%v allocations per push and drain", allocs)
	}
}

// One producer and one consumer at once (run with -race): every record
// arrives once, in order, or is counted as dropped.
func TestPublishQueueConcurrent(t *testing.T) {
	q := NewPublishQueue(64)
	const n = 100000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			q.Push(&Publish{Backend: uint32(i)})
		}
	}()
	next, got := uint32(0), 0
	check := func(p *Publish) {
		if p.Backend < next {
			t.Errorf("record %d after %d", p.Backend, next)
		}
		next = p.Backend + 1
		got++
	}
	for {
		pushed, dropped := q.Counts()
		q.Drain(check)
		if pushed+dropped == n {
			q.Drain(check)
			break
		}
	}
	wg.Wait()
	if pushed, dropped := q.Counts(); uint64(got) != pushed || pushed+dropped != n {
		t.Fatalf("got %d, pushed %d, dropped %d", got, pushed, dropped)
	}
}
