package pipeline

import (
	"sync/atomic"

	"github.com/sluicelb/sluice/internal/flow"
)

// Publish is a new flow of a service that publishes its flows (affinity
// always): the node server inserts it into the flow's owner chain. Service
// and Backend are the cluster's numbers (Service.ClusterID,
// Real.ClusterID), the same on every node.
type Publish struct {
	Key     flow.Key
	Service uint16
	Backend uint32
}

// PublishQueue is a bounded single-producer, single-consumer ring of
// Publish records: the worker that owns it pushes (Push never blocks nor
// allocates; a full ring drops the record and counts it) and one consumer
// goroutine drains it (Drain).
type PublishQueue struct {
	buf  []Publish
	mask uint64
	_    [64]byte
	tail atomic.Uint64 // next slot to write; written by the producer
	_    [56]byte
	head atomic.Uint64 // next slot to read; written by the consumer
	_    [56]byte
	// Pushed and Dropped count records queued and records dropped because
	// the ring was full; written by the producer.
	pushed, dropped atomic.Uint64
}

// NewPublishQueue returns a queue holding up to n records (rounded up to a
// power of two, at least 2).
func NewPublishQueue(n int) *PublishQueue {
	size := 2
	for size < n {
		size <<= 1
	}
	return &PublishQueue{buf: make([]Publish, size), mask: uint64(size - 1)}
}

// Push queues *p; false (and counted) when the queue is full. Only the
// producer calls it.
func (q *PublishQueue) Push(p *Publish) bool {
	t := q.tail.Load()
	if t-q.head.Load() > q.mask {
		q.dropped.Add(1)
		return false
	}
	q.buf[t&q.mask] = *p
	q.tail.Store(t + 1)
	q.pushed.Add(1)
	return true
}

// Drain calls fn for every queued record, oldest first, and returns how many
// it took. Only the consumer calls it; fn must not keep the pointer.
func (q *PublishQueue) Drain(fn func(*Publish)) int {
	h, t := q.head.Load(), q.tail.Load()
	for i := h; i != t; i++ {
		fn(&q.buf[i&q.mask])
	}
	q.head.Store(t)
	return int(t - h)
}

// Counts returns the records pushed and dropped (full queue) so far.
func (q *PublishQueue) Counts() (pushed, dropped uint64) {
	return q.pushed.Load(), q.dropped.Load()
}
