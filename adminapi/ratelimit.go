package adminapi

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/apierr"
)

// KMSRateLimit bounds, per organization and per server (replica), how often
// the Admin API routes that make ekm call a KMS or a cloud's identity
// endpoint may be called: registering and validating an external key,
// creating a project, re-keying a project (an update with
// external_key_id), rotating a project's key, and setting the
// organization's default key. Those calls go out through ekm's own
// credentials, whose quotas (AWS STS AssumeRole per ekm's account, the
// Entra ID token endpoint, Google STS, OCI) every organization shares: one
// organization's admin key must not be able to use them up for the others.
//
// It is a token bucket per organization: Burst calls at once, then
// PerSecond calls a second on average. A refused call is answered 429
// rate_limit_exceeded with Retry-After, before anything is read, written
// or called for it.
type KMSRateLimit struct {
	// PerSecond is the rate at which an organization's bucket refills
	// (calls per second); ≤ 0 (or NaN) means no limit.
	PerSecond float64
	// Burst is the bucket's size: the calls an organization that has been
	// idle can make at once (< 1 is taken as 1).
	Burst int
}

// kmsLimiter is a token bucket per organization. Only buckets that are
// not full are kept (a full bucket is the same as none): each sweep
// forgets the full ones, so it holds at most the organizations that made a
// limited call in the last two sweep periods (one fill time each, between
// a second and an hour).
type kmsLimiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time
	every time.Duration // between sweeps

	mu      sync.Mutex
	buckets map[string]bucket
	swept   time.Time
}

// bucket is an organization's tokens n at time at.
type bucket struct {
	n  float64
	at time.Time
}

func newKMSLimiter(l KMSRateLimit, now func() time.Time) *kmsLimiter {
	if !(l.PerSecond > 0) || math.IsInf(l.PerSecond, 0) {
		return nil
	}
	burst := float64(max(l.Burst, 1))
	fill := burst / l.PerSecond // seconds
	every := time.Hour
	if fill < every.Seconds() {
		every = max(time.Duration(fill*float64(time.Second)), time.Second)
	}
	return &kmsLimiter{rate: l.PerSecond, burst: burst, now: now, every: every, buckets: map[string]bucket{}}
}

// level is b's tokens at now (a clock that went back refills nothing).
func (l *kmsLimiter) level(b bucket, now time.Time) float64 {
	elapsed := max(now.Sub(b.at).Seconds(), 0)
	return min(l.burst, b.n+elapsed*l.rate)
}

// take spends one of org's tokens. Without one left it spends nothing and
// says how long until there is one.
func (l *kmsLimiter) take(org string) (ok bool, wait time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	n := l.burst
	if b, found := l.buckets[org]; found {
		n = l.level(b, now)
	}
	if n >= 1 {
		l.buckets[org] = bucket{n: n - 1, at: now}
		return true, 0
	}
	// Not full, so it is kept; its level is brought to now.
	l.buckets[org] = bucket{n: n, at: now}
	return false, time.Duration((1 - n) / l.rate * float64(time.Second))
}

// sweep forgets the full buckets, at most once per l.every. The map is
// rebuilt so that its memory shrinks with it.
func (l *kmsLimiter) sweep(now time.Time) {
	if l.swept.IsZero() {
		l.swept = now
	}
	if now.Sub(l.swept) < l.every {
		return
	}
	l.swept = now
	keep := make(map[string]bucket, len(l.buckets)/2)
	for org, b := range l.buckets {
		if l.level(b, now) < l.burst {
			keep[org] = b
		}
	}
	l.buckets = keep
}

// size is the number of buckets held (tests).
func (l *kmsLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// limitKMS spends one of the calling organization's tokens for a call of
// a route that makes ekm call a KMS (KMSRateLimit). Handlers call it after
// decoding the request (a malformed request costs nothing: it never
// reaches a KMS) and before any store or KMS work.
func (a *api) limitKMS(r *http.Request) error {
	if a.kmsLimit == nil {
		return nil
	}
	org := caller(r).OrgID
	ok, wait := a.kmsLimit.take(org)
	if ok {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	secs = max(secs, 1)
	unit := "seconds"
	if secs == 1 {
		unit = "second"
	}
	// OpenAI's rate limit answer: 429, type "requests", code
	// rate_limit_exceeded. The SDKs retry it after Retry-After by
	// themselves, which is right here (unlike a second rotation).
	route := r.Pattern // the route, not the caller's path
	if route == "" {
		route = r.Method + " " + clip(r.URL.Path)
	}
	ae := apierr.New(http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "",
		"Rate limit reached for organization %s on Admin API requests that make ekm call a key management service "+
			"(%s is one): limit %s per second, bursts of %d, on this server. Nothing was done. Please try again in %d %s.",
		org, route, strconv.FormatFloat(a.kmsLimit.rate, 'g', -1, 64), int(a.kmsLimit.burst), secs, unit)
	ae.RetryAfter = secs
	return ae
}
