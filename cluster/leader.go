package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/ekm-dev/ekm/store"
)

// ReplicaID names this process in leases: host, pid and a random suffix,
// so that a restarted process never inherits its predecessor's leases.
func ReplicaID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// LeaderLease is the name of the leader's lease.
const LeaderLease = "leader"

// LeaderConfig configures a Leader. Zero values take the defaults noted.
type LeaderConfig struct {
	Store store.Store
	// Holder is this replica (ReplicaID).
	Holder string
	// TTL is how long the lease lasts unrenewed (default 60s): the longest
	// a dead leader's jobs wait for another replica.
	TTL time.Duration
	// Renew is how often the leader renews and others try to take over
	// (default TTL/4).
	Renew  time.Duration
	Logger *slog.Logger
}

// Leader runs jobs on one replica at a time: the holder of the "leader"
// lease. Every replica runs one; each tries to take the lease every Renew;
// the holder renews it. The lease is timed by the database's clock
// (store.Queries.AcquireLeasesFor), so replicas whose clocks disagree still
// agree on who holds it. A leader that cannot renew stops its jobs one Renew
// before its lease expires: its deadline is counted on its own clock from
// before the statement was sent, which is no later than the database's
// instant of the lease (only elapsed time is compared, never two clocks'
// readings), so two replicas' jobs never overlap whatever the clocks' offsets;
// another replica takes over once the lease has expired. On a clean stop
// the lease is released at once.
type Leader struct {
	cfg     LeaderConfig
	leading atomic.Bool
}

// NewLeader returns a Leader; Run campaigns.
func NewLeader(cfg LeaderConfig) *Leader {
	if cfg.TTL <= 0 {
		cfg.TTL = time.Minute
	}
	if cfg.Renew <= 0 || cfg.Renew >= cfg.TTL {
		cfg.Renew = cfg.TTL / 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Leader{cfg: cfg}
}

// Leading reports whether this replica leads now.
func (l *Leader) Leading() bool { return l.leading.Load() }

// Run campaigns until ctx ends. While this replica leads, jobs runs with a
// context that ends when the lease is lost (or ctx ends); Run waits for
// jobs to return before campaigning again.
func (l *Leader) Run(ctx context.Context, jobs func(ctx context.Context)) {
	defer l.release()
	t := time.NewTicker(l.cfg.Renew)
	defer t.Stop()
	for {
		if deadline, ok := l.acquire(ctx); ok {
			l.lead(ctx, t, deadline, jobs)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// acquire takes or renews the lease (for TTL on the database's clock);
// deadline is when jobs must stop unless renewed again: one Renew before the
// lease expires, counted on this replica's clock from before the statement
// was sent (the database's instant of the lease is no earlier).
func (l *Leader) acquire(ctx context.Context) (deadline time.Time, ok bool) {
	start := time.Now()
	ls, err := l.cfg.Store.AcquireLeasesFor(ctx, l.cfg.Holder, []string{LeaderLease}, l.cfg.TTL, true)
	if err != nil {
		if ctx.Err() == nil {
			l.cfg.Logger.Warn("leader lease: acquire failed", "err", err)
		}
		return time.Time{}, false
	}
	return start.Add(l.cfg.TTL - l.cfg.Renew), len(ls) == 1
}

func (l *Leader) lead(ctx context.Context, t *time.Ticker, deadline time.Time, jobs func(ctx context.Context)) {
	l.leading.Store(true)
	defer l.leading.Store(false)
	l.cfg.Logger.Info("leader: this replica runs the background jobs", "replica", l.cfg.Holder)
	jctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); jobs(jctx) }()
	defer func() { cancel(); <-done }()
	expiry := time.NewTimer(time.Until(deadline))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expiry.C:
			l.cfg.Logger.Warn("leader: lease not renewed in time; stopping the background jobs")
			return
		case <-t.C:
		}
		d, ok := l.acquire(ctx)
		switch {
		case ok:
			expiry.Reset(time.Until(d))
		case d.IsZero():
			// The renewal failed (database unreachable): keep going until
			// the deadline, trying again each Renew.
		default:
			l.cfg.Logger.Warn("leader: lease taken by another replica; stopping the background jobs")
			return
		}
	}
}

// release frees the lease on a clean stop, so another replica takes over
// without waiting for it to expire.
func (l *Leader) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.cfg.Store.ReleaseLeases(ctx, l.cfg.Holder, []string{LeaderLease}); err != nil {
		l.cfg.Logger.Warn("leader lease: release failed", "err", err)
	}
}
