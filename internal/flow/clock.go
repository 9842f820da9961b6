package flow

import "time"

// ClockStart is the reading of a new Clock: five minutes before the uint32
// millisecond counter wraps. Like Linux's INITIAL_JIFFIES, it makes every
// process cross the wrap early, so that code comparing readings without
// wraparound-safe arithmetic fails in tests rather than after 49 days.
// Readings are never 0-based: do not use 0 as "unset".
const ClockStart = uint32(1<<32 - 5*60*1000)

// Clock is a coarse monotonic millisecond clock for Entry.LastSeen and the
// now arguments of Table. A worker reads it once per batch and passes the
// reading down. Readings wrap every 2^32 ms (about 49.7 days); compare them
// only through differences, as int32(a-b), which is valid for readings less
// than 2^31 ms (about 24.8 days) apart.
//
// A Clock is immutable after NewClock: any number of goroutines may call Now.
type Clock struct {
	start time.Time // carries the monotonic reading
}

// NewClock returns a clock that reads ClockStart now.
func NewClock() *Clock { return &Clock{start: time.Now()} }

// Now returns the milliseconds elapsed since NewClock, plus ClockStart,
// modulo 2^32. It uses the monotonic clock and does not allocate.
func (c *Clock) Now() uint32 {
	return ClockStart + uint32(time.Since(c.start).Milliseconds())
}

// Millis converts a duration to clock units (milliseconds), rounding up, for
// comparisons with differences of readings. It saturates at 2^32-1.
func Millis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(ms)
}
