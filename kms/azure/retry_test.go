package azure

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/kms"
)

const throttledBody = `{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}}`

// throttledProvider returns a warmed-up provider whose every Key Vault
// request is answered 429 with the given headers, and a func that returns
// the times of the attempts made since.
func throttledProvider(t *testing.T, retry RetryConfig, hdr ...string) (*Provider, func() []time.Time) {
	t.Helper()
	f := newFakeAzure(t)
	p := f.provider(t, f.driver(t, func(c *Config) { c.Retry = retry }), fakeTenant)
	if _, err := p.Describe(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-f.attemptTimes
	f.kvFault = func(w http.ResponseWriter, r *http.Request) bool {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		writeRaw(w, http.StatusTooManyRequests, throttledBody)
		return true
	}
	return p, func() []time.Time {
		var ts []time.Time
		for {
			select {
			case x := <-f.attemptTimes:
				ts = append(ts, x)
			default:
				return ts
			}
		}
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	const wait = 60 * time.Millisecond
	retry := RetryConfig{MaxRetries: 3, RetryDelay: time.Millisecond, MaxRetryDelay: time.Second, TryTimeout: 5 * time.Second}
	p, attempts := throttledProvider(t, retry, "retry-after-ms", "60")
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "throttled", err, wantErr{kms.Outage, CodeThrottled, ""})
	ts := attempts()
	if len(ts) != retry.MaxRetries+1 {
		t.Fatalf("%d attempts, want MaxRetries+1 = %d", len(ts), retry.MaxRetries+1)
	}
	for i := 1; i < len(ts); i++ {
		// RetryDelay is 1ms, so only Retry-After explains a longer gap.
		if gap := ts[i].Sub(ts[i-1]); gap < wait {
			t.Fatalf("attempt %d came %v after the previous one; Retry-After asked for %v", i+1, gap, wait)
		}
	}
}

func TestRetryGivesUpOnLongRetryAfter(t *testing.T) {
	// Retry-After beyond MaxRetryDelay: azcore does not wait; one attempt.
	retry := RetryConfig{MaxRetries: 3, RetryDelay: time.Millisecond, MaxRetryDelay: 50 * time.Millisecond, TryTimeout: 5 * time.Second}
	p, attempts := throttledProvider(t, retry, "Retry-After", "30")
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "throttled", err, wantErr{kms.Outage, CodeThrottled, ""})
	if n := len(attempts()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

func TestRetryBackoffWithoutRetryAfter(t *testing.T) {
	retry := RetryConfig{MaxRetries: 2, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: time.Second, TryTimeout: 5 * time.Second}
	p, attempts := throttledProvider(t, retry)
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "throttled", err, wantErr{kms.Outage, CodeThrottled, ""})
	ts := attempts()
	if len(ts) != 3 {
		t.Fatalf("%d attempts, want 3", len(ts))
	}
	// Exponential with jitter in [0.8, 1.3): try 1 waits >= 16ms, try 2 >= 48ms.
	if g1, g2 := ts[1].Sub(ts[0]), ts[2].Sub(ts[1]); g1 < 16*time.Millisecond || g2 < 48*time.Millisecond {
		t.Fatalf("backoff gaps %v, %v", g1, g2)
	}
}

func TestRetryDisabled(t *testing.T) {
	p, attempts := throttledProvider(t, RetryConfig{MaxRetries: -1})
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "throttled", err, wantErr{kms.Outage, CodeThrottled, ""})
	if n := len(attempts()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

// Many concurrent throttled calls stay within MaxRetries+1 attempts each.
func TestRetryNoStorm(t *testing.T) {
	const calls, maxRetries = 10, 2
	retry := RetryConfig{MaxRetries: maxRetries, RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond, TryTimeout: 5 * time.Second}
	p, attempts := throttledProvider(t, retry, "retry-after-ms", "5")
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			if _, err := p.Wrap(context.Background(), make([]byte, 32), testAAD); kms.ClassOf(err) != kms.Outage {
				t.Errorf("Wrap = %v", err)
			}
		})
	}
	wg.Wait()
	if n := len(attempts()); n != calls*(maxRetries+1) {
		t.Fatalf("%d attempts for %d calls, want %d", n, calls, calls*(maxRetries+1))
	}
}
