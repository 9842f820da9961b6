package pipeline

import (
	"sync/atomic"

	"github.com/sluicelb/sluice/internal/flow"
)

// Publish is a record a worker queues for the node's cluster member. Without
// Ask it is a new flow of a service that publishes its flows (affinity
// always, or a changing slot of an on-change service): the node server
// inserts it into the flow's owner chain. With Ask it is a flow the worker
// has no entry for and whose packets it holds: the node server asks the
// flow's chain (the tail answers its entry, or commits Backend, the
// worker's own decision, as the flow's) and returns the answer on the
// worker's ChainAnswer queue. Service and Backend are the cluster's
// numbers (Service.ClusterID, Real.ClusterID), the same on every node.
type Publish struct {
	Key     flow.Key
	Service uint16
	Ask     bool
	Backend uint32
}

// ChainAnswer is the owner chain's answer about a flow, for the worker that
// asked (Publish.Ask) or published it. OK: Backend (a Real.ClusterID) is
// the flow's committed backend; otherwise the chain could not answer in
// time and the worker decides locally.
type ChainAnswer struct {
	Key     flow.Key
	Backend uint32
	OK      bool
}

// Ring is a bounded single-producer, single-consumer queue: one goroutine
// pushes (Push never blocks nor allocates; a full ring drops the record and
// counts it) and one other goroutine drains it (Drain).
type Ring[T any] struct {
	buf  []T
	mask uint64
	_    [64]byte
	tail atomic.Uint64 // next slot to write; written by the producer
	_    [56]byte
	head atomic.Uint64 // next slot to read; written by the consumer
	_    [56]byte
	// pushed and dropped count records queued and records dropped because
	// the ring was full; written by the producer.
	pushed, dropped atomic.Uint64
}

// PublishQueue is a worker's queue of records for the cluster member: the
// worker produces, the node server consumes.
type PublishQueue = Ring[Publish]

// AnswerQueue is a worker's queue of its chains' answers: the node server
// produces, the worker consumes.
type AnswerQueue = Ring[ChainAnswer]

// NewRing returns a ring holding up to n records (rounded up to a power of
// two, at least 2).
func NewRing[T any](n int) *Ring[T] {
	size := 2
	for size < n {
		size <<= 1
	}
	return &Ring[T]{buf: make([]T, size), mask: uint64(size - 1)}
}

// NewPublishQueue returns a PublishQueue of n records (NewRing).
func NewPublishQueue(n int) *PublishQueue { return NewRing[Publish](n) }

// NewAnswerQueue returns an AnswerQueue of n records (NewRing).
func NewAnswerQueue(n int) *AnswerQueue { return NewRing[ChainAnswer](n) }

// Push queues *p; false (and counted) when the ring is full. Only the
// producer calls it.
func (q *Ring[T]) Push(p *T) bool {
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

// Reserve returns the next free slot for the producer to fill in place
// (no copy of a large record), or nil when the ring is full (counted as
// dropped); Commit publishes the filled slot. Only the producer calls them.
func (q *Ring[T]) Reserve() *T {
	t := q.tail.Load()
	if t-q.head.Load() > q.mask {
		q.dropped.Add(1)
		return nil
	}
	return &q.buf[t&q.mask]
}

// Commit publishes the slot the last Reserve returned.
func (q *Ring[T]) Commit() {
	q.tail.Store(q.tail.Load() + 1)
	q.pushed.Add(1)
}

// Drain calls fn for every queued record, oldest first, and returns how many
// it took. Only the consumer calls it; fn must not keep the pointer.
func (q *Ring[T]) Drain(fn func(*T)) int {
	h, t := q.head.Load(), q.tail.Load()
	for i := h; i != t; i++ {
		fn(&q.buf[i&q.mask])
	}
	q.head.Store(t)
	return int(t - h)
}

// Len returns how many records are queued (a snapshot).
func (q *Ring[T]) Len() int { return int(q.tail.Load() - q.head.Load()) }

// Counts returns the records pushed and dropped (full ring) so far.
func (q *Ring[T]) Counts() (pushed, dropped uint64) {
	return q.pushed.Load(), q.dropped.Load()
}
