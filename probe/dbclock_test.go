package probe_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/probe"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// dbClockOnly refuses leases timed by the caller's clock: a prober without
// a test clock must time its leases by the database's.
type dbClockOnly struct{ store.Store }

func (dbClockOnly) AcquireLeases(context.Context, string, []string, time.Time, time.Time, bool) ([]store.Lease, error) {
	return nil, errors.New("probe leases must be timed by the database's clock (AcquireLeasesFor)")
}

// dbCluster is newCluster without a test clock: leases on the database's
// clock, with the given lease TTL and check timeout.
func dbCluster(t *testing.T, dsn string, n int, ttl, checkTimeout time.Duration, wrap func(store.Store) store.Store, opts ...func(*probe.Config)) *cluster {
	t.Helper()
	open := func() store.Store {
		st, err := sqlstore.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	c := &cluster{st: open(), drv: kmsfake.New(), org: ids.New("org-")}
	root := secret.New()
	for i := range n {
		var st store.Store = dbClockOnly{open()}
		if wrap != nil {
			st = wrap(st)
		}
		svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(root), c.drv),
			Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}})
		if err := svc.Changes().Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		cfg := probe.Config{Store: st, Service: svc, Interval: interval, LeaseTTL: ttl, CheckTimeout: checkTimeout,
			Holder: fmt.Sprint("replica-", i)}
		for _, o := range opts {
			o(&cfg)
		}
		p := probe.New(cfg)
		c.rs = append(c.rs, &replica{svc: svc, p: p})
	}
	if err := c.st.CreateOrg(context.Background(), store.Org{ID: c.org, Name: "o", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return c
}

// Without a test clock the probe leases are timed by the database's clock
// (L4): replicas racing for them probe each key once, and a lease taken is
// held for its TTL whatever the replicas' clocks say.
func TestProbeLeasesOnDatabaseClock(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		c := dbCluster(t, dsn, 3, time.Hour, 0, nil)
		const n = 6
		eks, _ := c.keys(t, n)
		if got := c.round(0, 1, 2); got != n {
			t.Fatalf("3 replicas made %d probe decrypts for %d keys, want %d", got, n, n)
		}
		if got := c.round(0, 1, 2); got != 0 {
			t.Fatalf("%d probe decrypts while every lease is held, want 0", got)
		}
		l, err := c.st.GetLease(context.Background(), probe.LeasePrefix+eks[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Until(l.Expires); d < 59*time.Minute || d > time.Hour+time.Minute {
			t.Fatalf("lease expires in %v, want about an hour (the database's clock + TTL)", d)
		}
	})
}

// A check cannot outlive its probe lease (L4): a check longer than the
// lease TTL keeps its lease by renewing it, so no other replica takes the
// key meanwhile (however many rounds it runs) and the KMS sees one check.
func TestCheckRenewsItsLease(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		// A TTL long enough that a renewal (every TTL/3) is not late on a
		// loaded machine: 300 ms let another replica in once in CI, and 1 s
		// once more (a renewal statement stalled for most of a TTL).
		const ttl, checkTimeout = 2 * time.Second, 5 * time.Second
		c := dbCluster(t, dsn, 2, ttl, checkTimeout, nil)
		eks, _ := c.keys(t, 1)
		release := c.drv.Hold()
		defer release()
		start := time.Now()
		done := make(chan struct{})
		go func() { defer close(done); c.rs[0].p.Round(context.Background()) }()
		for c.drv.Unwraps.Load() == 0 { // replica 0's check is held
			runtime.Gosched()
		}
		// Replica 1 runs rounds for three lease TTLs while the check runs
		// (it ends at checkTimeout, four TTLs in; after that replica 1 may
		// take the lease, rightly).
		rounds := 0
		for time.Since(start) < checkTimeout-ttl {
			c.rs[1].p.Round(context.Background())
			rounds++
		}
		<-done
		took := time.Since(start)
		release()
		if took < checkTimeout {
			t.Fatalf("the held check ended after %v, before its timeout %v", took, checkTimeout)
		}
		if n := c.drv.Unwraps.Load(); n != 1 {
			t.Fatalf("%d probe decrypts while one check held its lease for %v (lease TTL %v, %d rounds of the other replica)", n, took, ttl, rounds)
		}
		l, err := c.st.GetLease(context.Background(), probe.LeasePrefix+eks[0].ID)
		// (replica 1's last round may have taken the lease once the check
		// ended: only the decrypts count.)
		if err != nil || l.Taken < 3 {
			t.Fatalf("lease %+v (%v), want it renewed", l, err)
		}
		t.Logf("check held %v under a %v lease (taken %d times); the other replica ran %d rounds without probing", took.Round(time.Millisecond), ttl, l.Taken, rounds)
	})
}

// renewalFails is a store whose lease renewals fail (the database lost
// while a check runs).
type renewalFails struct{ store.Store }

func (r renewalFails) AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]store.Lease, error) {
	if renew {
		return nil, errors.New("database unreachable")
	}
	return r.Store.AcquireLeasesFor(ctx, holder, names, ttl, renew)
}

// renewalStalls is a store whose lease renewals hang until their context
// ends (a database that stopped answering, or a row lock held elsewhere).
type renewalStalls struct{ store.Store }

func (r renewalStalls) AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]store.Lease, error) {
	if renew {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return r.Store.AcquireLeasesFor(ctx, holder, names, ttl, renew)
}

// A check whose lease cannot be renewed is cancelled before the lease
// expires, as the database's clock counts it (L4), whether the renewal
// fails or hangs (a renewal statement that stalled kept the check running
// past its lease: CI failure of TestCheckRenewsItsLease under load); and
// nothing is recorded of it: a lost lease is not the customer's doing, and
// a late record could overwrite what the lease's next holder found.
func TestCheckEndsWithinItsLease(t *testing.T) {
	for name, wrap := range map[string]func(store.Store) store.Store{
		"fails":  func(s store.Store) store.Store { return renewalFails{s} },
		"stalls": func(s store.Store) store.Store { return renewalStalls{s} },
	} {
		t.Run(name, func(t *testing.T) { checkEndsWithinItsLease(t, wrap) })
	}
}

func checkEndsWithinItsLease(t *testing.T, wrap func(store.Store) store.Store) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		const ttl = 600 * time.Millisecond
		c := dbCluster(t, dsn, 1, ttl, time.Minute, wrap)
		eks, _ := c.keys(t, 1)
		release := c.drv.Hold()
		defer release()
		c.round(0) // returns when the held check is cancelled
		ended := time.Now()
		release()
		l, err := c.st.GetLease(context.Background(), probe.LeasePrefix+eks[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		// The database runs on this machine here: one clock.
		if !ended.Before(l.Expires) {
			t.Fatalf("the check ended at %v, after its lease expired (%v)", ended, l.Expires)
		}
		if took := ended.Sub(l.Expires.Add(-ttl)); took > ttl {
			t.Fatalf("the round took %v, longer than the lease", took)
		}
		got, _ := c.st.GetExternalKey(context.Background(), c.org, eks[0].ID)
		if got.Status != store.StatusValid {
			t.Fatalf("status %q after a check cut short by its lease, want it left valid", got.Status)
		}
	})
}

// slowRenewals is a store whose lease renewals take d before they go
// through (a database slow to answer).
type slowRenewals struct {
	store.Store
	d time.Duration
}

func (r slowRenewals) AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]store.Lease, error) {
	if renew {
		select {
		case <-time.After(r.d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return r.Store.AcquireLeasesFor(ctx, holder, names, ttl, renew)
}

// A check that waited for a slot renews its lease first; if what is left
// of the lease after that is too short to check in (the renewal failed or
// took most of it), the key is left to the next round rather than checked
// and cut short (which was recorded as an outage of the customer's key).
func TestSlotWaitWithLittleLeaseLeftSkipsTheKey(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		const ttl = time.Second
		c := dbCluster(t, dsn, 1, ttl, time.Minute, func(s store.Store) store.Store { return slowRenewals{s, 7 * ttl / 10} },
			func(cfg *probe.Config) { cfg.Concurrency = 1 })
		eks, _ := c.keys(t, 2)
		release := c.drv.Hold()
		defer release()
		done := make(chan struct{})
		go func() { defer close(done); c.rs[0].p.Round(context.Background()) }()
		for c.drv.Unwraps.Load() == 0 { // the first key's check holds the one slot
			runtime.Gosched()
		}
		time.Sleep(ttl / 2) // the second key waits for the slot meanwhile
		release()
		<-done
		if n := c.drv.Unwraps.Load(); n != 1 {
			t.Fatalf("%d probe decrypts, want 1: the key that waited for its slot was checked with too little of its lease left", n)
		}
		for _, ek := range eks {
			got, _ := c.st.GetExternalKey(context.Background(), c.org, ek.ID)
			if got.Status != store.StatusValid {
				t.Fatalf("key %s: status %q, want valid (nothing recorded against the customer)", ek.ID, got.Status)
			}
		}
	})
}

// renewalIgnoresContext is a store whose lease renewals hang for d
// whatever their context says (a driver that does not honour
// cancellation), then fail.
type renewalIgnoresContext struct {
	store.Store
	d time.Duration
}

func (r renewalIgnoresContext) AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]store.Lease, error) {
	if renew {
		time.Sleep(r.d)
		return nil, errors.New("database unreachable")
	}
	return r.Store.AcquireLeasesFor(ctx, holder, names, ttl, renew)
}

// The check is cut at its lease's end by a timer of its own, not when a
// renewal statement returns: with a renewal that ignores its deadline and
// hangs for six lease TTLs, the KMS call is still cancelled by then.
func TestCheckCutAtLeaseEndWhateverTheRenewal(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		const ttl = 600 * time.Millisecond
		c := dbCluster(t, dsn, 1, ttl, time.Minute, func(s store.Store) store.Store { return renewalIgnoresContext{s, 6 * ttl} })
		c.keys(t, 1)
		release := c.drv.Hold()
		defer release()
		start := time.Now()
		done := make(chan struct{})
		go func() { defer close(done); c.round(0) }()
		for c.drv.Unwraps.Load() == 0 {
			runtime.Gosched()
		}
		// Cut at 0.9 TTL; 3 TTLs leave room for a loaded machine and stay
		// well short of the hung renewal's return (TTL/3 + 6 TTLs).
		for c.drv.InFlight() > 0 {
			if time.Since(start) > 3*ttl {
				t.Fatalf("the check's KMS call still ran %v after the check began (lease TTL %v): it waited for the hung renewal", time.Since(start), ttl)
			}
			time.Sleep(5 * time.Millisecond)
		}
		<-done
	})
}
