package emukit

import "sync"

// Counters count requests per operation name.
type Counters struct {
	mu sync.Mutex
	m  map[string]int
}

// Inc adds one to op.
func (c *Counters) Inc(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[op]++
}

// Snapshot copies the counters.
func (c *Counters) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// Reset zeroes all counters.
func (c *Counters) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}
