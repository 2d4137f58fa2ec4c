// Package lifecycletest assembles a lifecycle.Service over a fresh SQLite
// store, a local driver and a kmsfake driver, with a fake clock, for tests
// of the key lifecycle and the keyring. Test-only.
package lifecycletest

import (
	"context"
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
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

func (c *Clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// Env is one assembled service with an org.
type Env struct {
	Store   store.Store
	Service *lifecycle.Service
	Keyring *keyring.Keyring
	// Fake serves keys of type kmsfake.Type; its calls can fail or be held.
	Fake  *kmsfake.Driver
	Clock *Clock
	Org   string
}

// Options tune New.
type Options struct {
	CacheSize int           // default 100
	CacheTTL  time.Duration // default 1h
}

// New assembles an Env; everything is closed with the test.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if o.CacheSize == 0 {
		o.CacheSize = 100
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = time.Hour
	}
	fake := kmsfake.New()
	clock := &Clock{t: time.Unix(1_800_000_000, 0)}
	svc := lifecycle.New(lifecycle.Config{
		Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New()), fake),
		Default:  kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}},
		CacheTTL: o.CacheTTL, CacheSize: o.CacheSize, Now: clock.Now,
	})
	e := &Env{Store: st, Service: svc, Keyring: svc.Keyring(), Fake: fake, Clock: clock, Org: ids.New("org-")}
	if err := st.CreateOrg(ctx, store.Org{ID: e.Org, Name: "acme", CreatedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	return e
}

// ExternalKey stores a valid external key of typ (local or kmsfake.Type)
// with fresh params.
func (e *Env) ExternalKey(t testing.TB, typ string) store.ExternalKey {
	t.Helper()
	p, err := e.Service.Check(typ, e.Org, nil)
	if err != nil {
		t.Fatal(err)
	}
	ek := store.ExternalKey{ID: ids.New("extkey_"), OrgID: e.Org, Type: typ, Name: "k", Purpose: "ekm", Params: p, Status: store.StatusValid, CreatedAt: e.Clock.Now()}
	if err := e.Store.CreateExternalKey(context.Background(), ek); err != nil {
		t.Fatal(err)
	}
	return ek
}

// Project stores a project with version 1 of its key wrapped by ek (nil =
// the default key) and returns its id and the plaintext key (which the
// caller may Zero).
func (e *Env) Project(t testing.TB, ek *store.ExternalKey) (string, secret.Key) {
	t.Helper()
	ctx := context.Background()
	pid := ids.New("proj_")
	rec, pk, err := e.Service.NewVersion(ctx, e.Org, pid, 1, ek)
	if err != nil {
		t.Fatal(err)
	}
	ekID := ""
	if ek != nil {
		ekID = ek.ID
	}
	err = e.Store.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateProject(ctx, store.Project{ID: pid, OrgID: e.Org, Name: "p", ExternalKeyID: ekID, CreatedAt: e.Clock.Now(), CurrentKeyVersion: 1}); err != nil {
			return err
		}
		return q.PutProjectKey(ctx, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid, pk
}

// Events counts the org's audit events of typ.
func (e *Env) Events(t testing.TB, typ string) []store.AuditEvent {
	t.Helper()
	evs, err := e.Store.ListAudit(context.Background(), e.Org, store.AuditFilter{Types: []string{typ}, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}
