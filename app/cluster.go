package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/internal/filelock"

	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/store"
)

// newChanges is the change log of a server: read at least every probe
// interval, so that a change whose notification was lost is applied within
// one (docs/OPERATIONS.md, "PostgreSQL and replicas").
func newChanges(st store.Store, c Config) *cluster.Log {
	return cluster.New(cluster.Config{Store: st, Resync: c.ProbeInterval, Now: c.Now, Logger: c.Logger})
}

// leader is the campaign for the background jobs that must run on one
// replica at a time. Its lease lasts two probe intervals (at least 2 s) and
// is renewed four times per lease, so a dead leader's jobs resume on
// another replica within about 2.5 intervals.
func (a *App) leader() *cluster.Leader {
	ttl := max(2*a.Config.ProbeInterval, 2*time.Second)
	return cluster.NewLeader(cluster.LeaderConfig{Store: a.Store, Holder: a.Replica, TTL: ttl, Renew: ttl / 4, Logger: a.Logger})
}

// leaderJobs runs, on the leader only and until it stops leading, the
// background jobs that must not run on several replicas at once: audit
// retention, the blob sweep, the org-wide EKM migration, scheduled project
// key rotation, and pruning of expired leases. (Rewraps after a KEK
// rotation run with the probe, on the replica that holds the key's probe
// lease.) Every job is also safe to overlap (each change is a
// compare-and-set), which matters only in the moment a lease changes hands.
func (a *App) leaderJobs(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { a.pruneAudit(ctx) })
	wg.Go(func() { a.sweepBlobs(ctx) })
	wg.Go(func() { a.migrateOrgs(ctx) })
	wg.Go(func() { a.pruneLeases(ctx) })
	if r := a.rotator(); r != nil {
		wg.Go(func() { r.Run(ctx) })
	}
	wg.Wait()
}

// pruneLeases deletes, hourly, leases expired for an hour (probe leases of
// keys no longer in use).
func (a *App) pruneLeases(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if _, err := a.Store.PruneLeases(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
			a.Logger.Warn("pruning expired leases failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ErrSQLiteInUse is returned by Run when another server already serves the
// SQLite database.
var ErrSQLiteInUse = errors.New("another ekm server is using this SQLite database")

// singleServer makes sure this is the only server on an SQLite database:
// SQLite is for one server process (operator commands may run beside it).
// It holds an exclusive lock on <data dir>/serve.lock until release (or
// until the process ends, however it ends). PostgreSQL needs no lock.
func (a *App) singleServer() (release func(), err error) {
	if a.Config.Database != "" {
		return func() {}, nil
	}
	path := filepath.Join(a.Config.DataDir, "serve.lock")
	release, holder, err := filelock.Lock(path)
	if errors.Is(err, filelock.ErrLocked) {
		if holder != "" {
			holder = " (pid " + holder + ")"
		}
		return nil, fmt.Errorf("%w: a server%s serves %s (it holds %s). SQLite supports one server: stop the other one, "+
			"or run several replicas on PostgreSQL (--database postgres://…, docs/OPERATIONS.md). "+
			"Operator commands (ekm org create, ekm reencrypt, ekm org set-key, …) may run beside a server",
			ErrSQLiteInUse, holder, a.Config.DSN(), path)
	}
	if err != nil {
		return nil, fmt.Errorf("locking the SQLite database for this server: %w", err)
	}
	return release, nil
}
