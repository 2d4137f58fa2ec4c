package probe_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/probe"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// replica is one server's lifecycle service and prober over the shared
// database; all replicas call one customer KMS (drv).
type replica struct {
	svc *lifecycle.Service
	p   *probe.Prober
}

type cluster struct {
	st  store.Store // the test's own connection
	drv *kmsfake.Driver
	rs  []*replica
	org string
	clk *clock
}

const interval = time.Minute

func newCluster(t *testing.T, dsn string, n int) *cluster {
	t.Helper()
	open := func() store.Store {
		st, err := sqlstore.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	c := &cluster{st: open(), drv: kmsfake.New(), org: ids.New("org-"), clk: &clock{t: time.Unix(1_800_000_000, 0)}}
	root := secret.New()
	for i := range n {
		st := open()
		svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(root), c.drv),
			Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}, Now: c.clk.Now})
		if err := svc.Changes().Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		p := probe.New(probe.Config{Store: st, Service: svc, Interval: interval, EncryptEvery: 3,
			Holder: fmt.Sprint("replica-", i), Now: c.clk.Now})
		c.rs = append(c.rs, &replica{svc: svc, p: p})
	}
	if err := c.st.CreateOrg(context.Background(), store.Org{ID: c.org, Name: "o", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return c
}

// keys registers n fake keys, each protecting one project (created through
// replica 0), and returns their ids and projects.
func (c *cluster) keys(t *testing.T, n int) (eks []store.ExternalKey, pids []string) {
	t.Helper()
	ctx := context.Background()
	svc := c.rs[0].svc
	for range n {
		p, err := svc.Check(kmsfake.Type, c.org, nil)
		if err != nil {
			t.Fatal(err)
		}
		ek := store.ExternalKey{ID: ids.New("extkey_"), OrgID: c.org, Type: kmsfake.Type, Name: "k", Purpose: "ekm", Params: p, Status: store.StatusValid, CreatedAt: time.Now()}
		if err := c.st.CreateExternalKey(ctx, ek); err != nil {
			t.Fatal(err)
		}
		pr, err := svc.CreateProject(ctx, "", c.org, "p", ek.ID)
		if err != nil {
			t.Fatal(err)
		}
		eks, pids = append(eks, ek), append(pids, pr.ID)
	}
	return eks, pids
}

// round runs one round on each replica given, concurrently, and returns
// the probe decrypts the customer's KMS saw.
func (c *cluster) round(which ...int) int64 {
	before := c.drv.Unwraps.Load()
	var wg sync.WaitGroup
	for _, i := range which {
		wg.Go(func() { c.rs[i].p.Round(context.Background()) })
	}
	wg.Wait()
	return c.drv.Unwraps.Load() - before
}

func clusterBackends(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, filepath.Join(t.TempDir(), "ekm.db")) })
	t.Run("postgres", func(t *testing.T) { fn(t, pgtest.DSN(t)) })
}

// Three replicas probe each key once per interval between them, not once
// each; the keys of a replica that died are probed by the others once its
// leases expired; deep checks come every EncryptEvery probes of a key,
// whichever replica makes them.
func TestLeasesShareTheProbe(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn, 3)
		const n = 8
		c.keys(t, n)
		if got := c.round(0, 1, 2); got != n {
			t.Fatalf("3 replicas made %d probe decrypts for %d keys in one round, want %d", got, n, n)
		}
		c.clk.Advance(interval / 2)
		if got := c.round(0, 1, 2); got != 0 {
			t.Fatalf("%d probes half an interval later, want 0", got)
		}
		for range 5 {
			c.clk.Advance(interval)
			if got := c.round(0, 1, 2); got != n {
				t.Fatalf("%d probe decrypts in a round, want %d", got, n)
			}
		}
		// 6 probes of each key: deep at the 1st and 4th.
		if d := c.drv.Describs.Load(); d != 2*n {
			t.Fatalf("%d describes for 6 probes of %d keys with EncryptEvery 3, want %d", d, n, 2*n)
		}
		// Replica 0 dies (it stops probing; its leases stay until they
		// expire). The next round of the others probes every key.
		c.clk.Advance(interval)
		if got := c.round(1, 2); got != n {
			t.Fatalf("after replica 0 died: %d probe decrypts, want %d", got, n)
		}
		c.clk.Advance(interval)
		if got := c.round(2); got != n {
			t.Fatalf("one replica left: %d probe decrypts, want %d", got, n)
		}
	})
}

// A revocation seen by whichever replica probes the key closes every
// replica's gate: by the change log, and, should a replica miss it, by its
// next round (the gate follows the stored health). Restoring reopens all.
func TestRevocationReachesEveryReplica(t *testing.T) {
	clusterBackends(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn, 3)
		ctx := context.Background()
		eks, pids := c.keys(t, 1)
		ek, pid := eks[0], pids[0]
		read := func(i int) error {
			k, err := c.rs[i].svc.Keyring().Key(ctx, c.org, pid, 1)
			k.Zero()
			return err
		}
		for i := range c.rs {
			if err := read(i); err != nil { // cached on every replica
				t.Fatal(err)
			}
		}
		c.drv.Fail(kmsfake.ErrRevoked)
		unwraps := c.drv.Unwraps.Load()
		c.round(1) // replica 1 probes and records the revocation
		if got := c.drv.Unwraps.Load() - unwraps; got != 1 {
			t.Fatalf("%d probe decrypts, want 1", got)
		}
		// Replica 2 applies the change log (Run does on notification);
		// replica 0 misses it: its next round repairs it.
		if err := c.rs[2].svc.Changes().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		c.clk.Advance(interval / 2) // the lease is still held: the round only follows
		c.round(0)
		unwraps = c.drv.Unwraps.Load()
		for i := range c.rs {
			var u *keyring.UnavailableError
			if err := read(i); !errors.As(err, &u) || u.Class != kms.Revoked || u.Code != kmsfake.ErrRevoked.Code {
				t.Fatalf("replica %d after the revocation: %v", i, err)
			}
		}
		if c.drv.Unwraps.Load() != unwraps {
			t.Fatal("a replica asked the KMS although its gate should be closed")
		}

		c.drv.Fail(nil)
		c.clk.Advance(interval)
		c.round(0, 1, 2)
		for i := range c.rs {
			if err := c.rs[i].svc.Changes().Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := read(i); err != nil {
				t.Fatalf("replica %d after the restore: %v", i, err)
			}
		}
		if got, _ := c.st.GetExternalKey(ctx, c.org, ek.ID); got.Status != store.StatusValid {
			t.Fatalf("status %q", got.Status)
		}
		evs, err := c.st.ListAudit(ctx, c.org, store.AuditFilter{Types: []string{"external_key.unavailable", "external_key.restored"}})
		if err != nil || len(evs) != 2 {
			t.Fatalf("events: %d %v, want one unavailable and one restored", len(evs), err)
		}
	})
}
