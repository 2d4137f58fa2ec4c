package auth

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Toucher writes last-use times (store.Queries.TouchAPIKeys).
type Toucher interface {
	TouchAPIKeys(ctx context.Context, at time.Time, ids []string) error
}

// LastUsed records when API keys were last used without a database write
// per request: a request marks its key in memory (at most once per key and
// Resolution: a lock-free map read otherwise), and Flush writes what was
// marked, grouped by minute, in one statement per batch of up to
// touchBatch keys. So last_used_at has Resolution's precision, lags by up
// to the flush interval, and a crash loses at most that interval's marks.
// It is independent of how keys are looked up, so a cache of key lookups
// in front of the store changes nothing here.
type LastUsed struct {
	st  Toucher
	res time.Duration
	now func() time.Time
	log *slog.Logger

	// seen: key id → the latest Resolution-truncated time already marked
	// (pending or written), read without locking on every request.
	seen sync.Map
	mu   sync.Mutex
	// pending: key id → time to write.
	pending map[string]time.Time
}

// DefaultLastUsedResolution is the precision of last_used_at.
const DefaultLastUsedResolution = time.Minute

// touchBatch bounds the ids of one statement.
const touchBatch = 500

// NewLastUsed returns a tracker writing to st at resolution res (0: a
// minute). now and log may be nil.
func NewLastUsed(st Toucher, res time.Duration, now func() time.Time, log *slog.Logger) *LastUsed {
	if res <= 0 {
		res = DefaultLastUsedResolution
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LastUsed{st: st, res: res, now: now, log: log, pending: map[string]time.Time{}}
}

// Seen marks key id as used now. It is cheap and never blocks on I/O.
func (l *LastUsed) Seen(id string) {
	if l == nil || id == "" {
		return
	}
	at := l.now().UTC().Truncate(l.res)
	if v, ok := l.seen.Load(id); ok && !v.(time.Time).Before(at) {
		return
	}
	l.mu.Lock()
	if cur, ok := l.pending[id]; !ok || cur.Before(at) {
		l.pending[id] = at
	}
	l.mu.Unlock()
	l.seen.Store(id, at)
}

// Flush writes the marks made since the last flush. On failure they are
// kept for the next one.
func (l *LastUsed) Flush(ctx context.Context) error {
	l.mu.Lock()
	batch := l.pending
	l.pending = map[string]time.Time{}
	l.mu.Unlock()
	// Forget marks older than the current period: the map stays bounded by
	// the keys used in one period.
	cutoff := l.now().UTC().Truncate(l.res)
	l.seen.Range(func(k, v any) bool {
		if v.(time.Time).Before(cutoff) {
			l.seen.CompareAndDelete(k, v)
		}
		return true
	})
	if len(batch) == 0 {
		return nil
	}
	byTime := map[time.Time][]string{}
	for id, at := range batch {
		byTime[at] = append(byTime[at], id)
	}
	times := make([]time.Time, 0, len(byTime))
	for at := range byTime {
		times = append(times, at)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	var failed []string
	var firstErr error
	for _, at := range times {
		ids := byTime[at]
		sort.Strings(ids)
		for len(ids) > 0 {
			n := min(len(ids), touchBatch)
			if err := l.st.TouchAPIKeys(ctx, at, ids[:n]); err != nil {
				failed = append(failed, ids[:n]...)
				if firstErr == nil {
					firstErr = err
				}
			}
			ids = ids[n:]
		}
	}
	if len(failed) > 0 {
		l.mu.Lock()
		for _, id := range failed {
			if cur, ok := l.pending[id]; !ok || cur.Before(batch[id]) {
				l.pending[id] = batch[id]
			}
		}
		l.mu.Unlock()
	}
	return firstErr
}

// Run flushes every interval (0: Resolution) until ctx is done, then once
// more, so that a clean shutdown loses nothing.
func (l *LastUsed) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = l.res
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := l.Flush(fctx); err != nil {
				l.log.Warn("recording API key last use failed", "err", err)
			}
			return
		case <-t.C:
			if err := l.Flush(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("recording API key last use failed; will retry", "err", err)
			}
		}
	}
}
