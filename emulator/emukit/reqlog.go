package emukit

import "sync"

// MaxRequestLog is the default capacity of a request log.
const MaxRequestLog = 10_000

// Ring is a bounded request log: once full, the oldest entry is dropped
// for each new one.
type Ring[T any] struct {
	mu   sync.Mutex
	max  int
	buf  []T // len <= max
	next int
}

// NewRing returns a ring of the given capacity (<= 0 means MaxRequestLog).
func NewRing[T any](capacity int) *Ring[T] {
	if capacity <= 0 {
		capacity = MaxRequestLog
	}
	return &Ring[T]{max: capacity}
}

func (l *Ring[T]) capacity() int {
	if l.max <= 0 {
		return MaxRequestLog
	}
	return l.max
}

// Add appends v, dropping the oldest entry when full.
func (l *Ring[T]) Add(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) < l.capacity() {
		l.buf = append(l.buf, v)
		return
	}
	l.buf[l.next] = v
	l.next = (l.next + 1) % len(l.buf)
}

// Snapshot returns the entries, oldest first.
func (l *Ring[T]) Snapshot() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]T, 0, len(l.buf))
	out = append(out, l.buf[l.next:]...)
	return append(out, l.buf[:l.next]...)
}

// Reset empties the log.
func (l *Ring[T]) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf, l.next = nil, 0
}
