package offload

import (
	"context"
	"sync/atomic"
	"time"
)

// Syncer moves the workers' Ops to the kernel: it drains every ring when
// woken (Wake) or every Interval, and applies what it found in one Update.
// The workers never wait for it: a full ring refuses the op (the flow stays
// in Go, and its later packets retry).
type Syncer struct {
	kernel Kernel
	rings  []*Ring
	wake   chan struct{}
	buf    []Op

	installed, deleted, errors atomic.Uint64
	lastErr                    atomic.Pointer[error]
	// Interval is the longest an op waits when no worker wakes the
	// Syncer (the workers wake it after every batch that queued one).
	Interval time.Duration
}

// NewSyncer returns a syncer of rings into k.
func NewSyncer(k Kernel, rings []*Ring) *Syncer {
	return &Syncer{kernel: k, rings: rings, wake: make(chan struct{}, 1), Interval: 100 * time.Millisecond}
}

// Kernel returns the kernel half the syncer updates.
func (s *Syncer) Kernel() Kernel { return s.kernel }

// Wake makes the syncer drain the rings soon; it never blocks or allocates.
func (s *Syncer) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run drains the rings until ctx is done, then once more.
func (s *Syncer) Run(ctx context.Context) {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Sync()
			return
		case <-s.wake:
		case <-t.C:
		}
		s.Sync()
	}
}

// Sync drains every ring once and applies the ops.
func (s *Syncer) Sync() {
	s.buf = s.buf[:0]
	for _, r := range s.rings {
		s.buf = r.Drain(s.buf)
	}
	if len(s.buf) == 0 {
		return
	}
	for i := range s.buf {
		if s.buf[i].Del {
			s.deleted.Add(1)
		} else {
			s.installed.Add(1)
		}
	}
	if err := s.kernel.Update(s.buf); err != nil {
		s.errors.Add(1)
		s.lastErr.Store(&err)
	}
}

// Counters returns the kernel's counters with the syncer's and the rings'.
func (s *Syncer) Counters() (Counters, error) {
	c, err := s.kernel.Counters()
	c.Installed, c.Deleted, c.Errors = s.installed.Load(), s.deleted.Load(), s.errors.Load()
	return c, err
}

// LastError returns the last error of an Update, or nil.
func (s *Syncer) LastError() error {
	if p := s.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}
