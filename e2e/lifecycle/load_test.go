package lifecycle

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ekmtest"
)

// kmsCalls counts the Key Vault operations ekm caused (the 401 challenge
// carries no key operation and is not a KMS call).
func kmsCalls(c map[string]int) int {
	return c["kv.decrypt"] + c["kv.encrypt"] + c["kv.get"]
}

// TestKMSLoad measures the Key Vault calls the emulator counts over a fixed
// window with no requests and with as many requests as the machine serves:
// the load is one probe per key per interval plus one unwrap per project
// per cache TTL, independent of the request rate. The figures are in
// docs/PERFORMANCE.md.
func TestKMSLoad(t *testing.T) {
	const (
		interval = 500 * time.Millisecond
		ttl      = time.Second
		window   = 3 * time.Second
		workers  = 8
	)
	env := ekmtest.Start(t, ekmtest.Options{ProbeInterval: interval, CacheTTL: ttl})
	f := newFixture(t, env, "load", 2)
	f.WaitStatus("valid", 10*time.Second)

	measure := func(workers int) (calls, tokens int, requests int64) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		var n atomic.Int64
		var wg sync.WaitGroup
		env.Emu.ResetCounters()
		for i := range workers {
			p := f.Projects[i%len(f.Projects)]
			c := f.Crypto(p)
			wg.Go(func() {
				for ctx.Err() == nil {
					pt, err := c.Decrypt(ctx, p.CT.Ciphertext, kit.AAD)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("decrypt under load: %v", err)
						}
						return
					}
					if string(pt) != string(p.Plain) {
						t.Error("wrong plaintext under load")
						return
					}
					n.Add(1)
				}
			})
		}
		// The window is the measurement itself, not a wait for a state.
		timer := time.NewTimer(window)
		<-timer.C
		c := env.Emu.Counters()
		cancel()
		wg.Wait()
		return kmsCalls(c), c["entra.token"], n.Load()
	}

	idleCalls, idleTokens, _ := measure(0)
	busyCalls, busyTokens, requests := measure(workers)
	perInterval := float64(idleCalls) / (float64(window) / float64(interval))
	t.Logf("window %v, probe interval %v, cache TTL %v, 1 key, %d projects", window, interval, ttl, len(f.Projects))
	t.Logf("no requests:       %3d Key Vault calls (%.2f per key per probe interval), %d token requests", idleCalls, perInterval, idleTokens)
	t.Logf("%6d decrypts:    %3d Key Vault calls, %d token requests (%.0f requests per Key Vault call)",
		requests, busyCalls, busyTokens, float64(requests)/float64(max(busyCalls, 1)))
	t.Logf("difference: %d calls; model: %d projects x %v/%v = %d unwraps",
		busyCalls-idleCalls, len(f.Projects), window, ttl, len(f.Projects)*int(window/ttl))

	// The model with slack for timer jitter and window edges: unwraps are
	// bounded by projects x (window/TTL + 2), whatever the request rate.
	if extra, bound := busyCalls-idleCalls, len(f.Projects)*(int(window/ttl)+2); extra > bound {
		t.Errorf("%d extra Key Vault calls under load, model allows %d", extra, bound)
	}
	if requests < int64(10*busyCalls) {
		t.Errorf("only %d requests for %d Key Vault calls: load test too weak to show independence", requests, busyCalls)
	}
}
