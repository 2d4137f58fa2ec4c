package probe_test

import (
	"context"
	"errors"
	"fmt"
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
func dbCluster(t *testing.T, dsn string, n int, ttl, checkTimeout time.Duration) *cluster {
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
		st := dbClockOnly{open()}
		svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(root), c.drv),
			Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}})
		if err := svc.Changes().Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		p := probe.New(probe.Config{Store: st, Service: svc, Interval: interval, LeaseTTL: ttl, CheckTimeout: checkTimeout,
			Holder: fmt.Sprint("replica-", i)})
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
		c := dbCluster(t, dsn, 3, time.Hour, 0)
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

// A check cannot outlive its probe lease (L4): a check timeout not below
// the lease TTL is lowered, and a check held up by its KMS ends before the
// lease expires, as the database's clock counts it.
func TestCheckEndsWithinItsLease(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		const ttl = 900 * time.Millisecond
		c := dbCluster(t, dsn, 1, ttl, time.Minute)
		eks, _ := c.keys(t, 1)
		release := c.drv.Hold()
		defer release()
		c.round(0) // returns when the held check is cut short
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
		// The check timed out: an outage, not a revocation.
		got, _ := c.st.GetExternalKey(context.Background(), c.org, eks[0].ID)
		if got.Status != store.StatusDegraded {
			t.Fatalf("status %q after a check cut short, want degraded", got.Status)
		}
	})
}
