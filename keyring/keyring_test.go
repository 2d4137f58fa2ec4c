package keyring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

type env struct {
	st    store.Store
	kr    *keyring.Keyring
	drv   *kmsfake.Driver
	org   string
	ek    store.ExternalKey
	clock *fakeClock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newEnv(t *testing.T, cacheSize int) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	root := secret.New()
	drv := kmsfake.New()
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	kr := keyring.New(keyring.Config{
		Store: st, Registry: kms.NewRegistry(local.NewDriver(root), drv),
		Default:  keyring.DefaultKey{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}},
		CacheTTL: time.Hour, CacheSize: cacheSize, Now: clock.Now,
	})
	e := &env{st: st, kr: kr, drv: drv, org: ids.New("org-"), clock: clock}
	if err := st.CreateOrg(ctx, store.Org{ID: e.org, Name: "acme", CreatedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.ek = e.newExtKey(t, kmsfake.Type)
	return e
}

func (e *env) newExtKey(t *testing.T, typ string) store.ExternalKey {
	t.Helper()
	p, err := e.kr.Check(typ, e.org, nil)
	if err != nil {
		t.Fatal(err)
	}
	ek := store.ExternalKey{ID: ids.New("extkey_"), OrgID: e.org, Type: typ, Name: "k", Purpose: "ekm", Params: p, Status: store.StatusValid, CreatedAt: e.clock.Now()}
	if err := e.st.CreateExternalKey(context.Background(), ek); err != nil {
		t.Fatal(err)
	}
	return ek
}

// newProject stores a project with version 1 of its key wrapped by ek.
func (e *env) newProject(t *testing.T, ek *store.ExternalKey) (string, secret.Key) {
	t.Helper()
	ctx := context.Background()
	pid := ids.New("proj_")
	rec, pk, err := e.kr.NewVersion(ctx, e.org, pid, 1, ek)
	if err != nil {
		t.Fatal(err)
	}
	ekID := ""
	if ek != nil {
		ekID = ek.ID
	}
	err = e.st.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateProject(ctx, store.Project{ID: pid, OrgID: e.org, Name: "p", ExternalKeyID: ekID, CreatedAt: e.clock.Now(), CurrentKeyVersion: 1}); err != nil {
			return err
		}
		return q.PutProjectKey(ctx, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid, pk
}

func TestKeyRoundTripAndCache(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, want := e.newProject(t, &e.ek)
	for range 5 {
		v, got, err := e.kr.Current(ctx, e.org, pid)
		if err != nil || v != 1 || !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("Current = %d, %v", v, err)
		}
		got.Zero() // the caller's copy; must not affect the cache
	}
	if n := e.drv.Unwraps.Load(); n != 1 {
		t.Fatalf("%d unwraps for 5 reads, want 1 (cache)", n)
	}
	// Wrong org sees nothing.
	if _, err := e.kr.Key(ctx, ids.New("org-"), pid, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other org: %v, want ErrNotFound", err)
	}
}

func TestConcurrentMissesCoalesce(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, want := e.newProject(t, &e.ek)
	release := e.drv.Hold()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			k, err := e.kr.Key(ctx, e.org, pid, 1)
			if err == nil && !bytes.Equal(k.Bytes(), want.Bytes()) {
				err = errors.New("wrong key")
			}
			if err != nil {
				errs <- err
			}
		})
	}
	// Wait until the single unwrap is in flight, then release it.
	for e.drv.Unwraps.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := e.drv.Unwraps.Load(); n != 1 {
		t.Fatalf("%d unwraps for 50 concurrent misses, want 1", n)
	}
}

func TestHardTTL(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(59 * time.Minute)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.drv.Unwraps.Load(); n != 1 {
		t.Fatalf("unwraps before TTL = %d", n)
	}
	e.clock.Advance(2 * time.Minute)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.drv.Unwraps.Load(); n != 2 {
		t.Fatalf("unwraps after TTL = %d, want 2", n)
	}
}

func TestBoundedCache(t *testing.T) {
	e := newEnv(t, 3)
	for range 5 {
		pid, _ := e.newProject(t, &e.ek)
		if _, err := e.kr.Key(context.Background(), e.org, pid, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.kr.CachedKeys(); n != 3 {
		t.Fatalf("cache holds %d keys, bound is 3", n)
	}
}

func TestRevocationClosesGateAndEvicts(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	other := e.newExtKey(t, kmsfake.Type)
	pid2, _ := e.newProject(t, &other)
	for _, p := range []string{pid, pid2} {
		if _, err := e.kr.Key(ctx, e.org, p, 1); err != nil {
			t.Fatal(err)
		}
	}
	e.kr.MarkUnavailable(e.ek.ID, &keyring.UnavailableError{ExternalKeyID: e.ek.ID, Class: kms.Revoked, Code: "x", Message: "revoked"})
	before := e.drv.Unwraps.Load()
	_, err := e.kr.Key(ctx, e.org, pid, 1)
	var u *keyring.UnavailableError
	if !errors.As(err, &u) || u.Retryable() {
		t.Fatalf("read after revocation: %v, want non-retryable UnavailableError", err)
	}
	if e.drv.Unwraps.Load() != before {
		t.Fatal("a revoked key was sent to the KMS")
	}
	if _, err := e.kr.Key(ctx, e.org, pid2, 1); err != nil {
		t.Fatalf("another key's project affected: %v", err)
	}
	if _, _, err := e.kr.NewVersion(ctx, e.org, pid, 2, &e.ek); !errors.As(err, &u) {
		t.Fatalf("write after revocation: %v", err)
	}
	e.kr.MarkAvailable(e.ek.ID)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatalf("after restore: %v", err)
	}
}

func TestRevokedUnwrapClosesGate(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	pid2, _ := e.newProject(t, &e.ek)
	if _, err := e.kr.Key(ctx, e.org, pid2, 1); err != nil {
		t.Fatal(err)
	}
	e.drv.Fail(kmsfake.ErrRevoked)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err == nil {
		t.Fatal("unwrap succeeded while revoked")
	}
	// The cached key of the sibling project is gone too.
	if _, err := e.kr.Key(ctx, e.org, pid2, 1); err == nil {
		t.Fatal("cached key of a revoked external key still served")
	}
	if e.kr.Unavailable(e.ek.ID) == nil {
		t.Fatal("gate not closed")
	}
	// The refusal is visible on the external key and in the audit log at
	// once, not only at the next probe.
	got, err := e.st.GetExternalKey(ctx, e.org, e.ek.ID)
	if err != nil || got.Status != store.StatusUnavailable || got.StatusCode != kmsfake.ErrRevoked.Code {
		t.Fatalf("stored health after a revoked unwrap: %+v, %v", got, err)
	}
	evs, err := e.st.ListAudit(ctx, e.org, store.AuditFilter{Types: []string{"external_key.unavailable"}, Limit: 10})
	if err != nil || len(evs) != 1 {
		t.Fatalf("unavailable events = %d, %v", len(evs), err)
	}
}

func TestOutageServesFromCache(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	pid2, _ := e.newProject(t, &e.ek)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	e.drv.Fail(kmsfake.ErrOutage)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatalf("cached key not served during outage: %v", err)
	}
	_, err := e.kr.Key(ctx, e.org, pid2, 1)
	var u *keyring.UnavailableError
	if !errors.As(err, &u) || !u.Retryable() {
		t.Fatalf("new unwrap during outage: %v, want retryable", err)
	}
	if e.kr.Unavailable(e.ek.ID) != nil {
		t.Fatal("an outage closed the gate")
	}
}

func TestEvictionRaceDoesNotCache(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	release := e.drv.Hold()
	done := make(chan error, 2)
	go func() { _, err := e.kr.Key(ctx, e.org, pid, 1); done <- err }()
	for e.drv.Unwraps.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The probe sees the revocation while the unwrap is in flight...
	e.kr.MarkUnavailable(e.ek.ID, &keyring.UnavailableError{ExternalKeyID: e.ek.ID, Class: kms.Revoked, Code: "x", Message: "revoked"})
	// ...and a request arriving after it joins the same unwrap.
	go func() { _, err := e.kr.Key(ctx, e.org, pid, 1); done <- err }()
	release()
	for range 2 {
		var u *keyring.UnavailableError
		if err := <-done; !errors.As(err, &u) {
			t.Fatalf("a waiter of an unwrap that raced a revocation got %v, want UnavailableError", err)
		}
	}
	e.kr.MarkAvailable(e.ek.ID)
	if n := e.kr.CachedKeys(); n != 0 {
		t.Fatalf("a key unwrapped across a revocation was cached (%d)", n)
	}
}

func TestRewrapAndRotate(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, v1 := e.newProject(t, &e.ek)
	v, err := e.kr.RotateProjectKey(ctx, e.org, pid)
	if err != nil || v != 2 {
		t.Fatalf("rotate = %d, %v", v, err)
	}
	cur, k2, err := e.kr.Current(ctx, e.org, pid)
	if err != nil || cur != 2 || bytes.Equal(k2.Bytes(), v1.Bytes()) {
		t.Fatalf("after rotate current = %d, %v", cur, err)
	}
	to := e.newExtKey(t, local.Type)
	recs, err := e.kr.Rewrap(ctx, e.org, pid, &to)
	if err != nil || len(recs) != 2 {
		t.Fatalf("rewrap: %d, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.ExternalKeyID != to.ID {
			t.Fatalf("rewrapped record names %q", r.ExternalKeyID)
		}
	}
	// Failure leaves nothing half-done: Rewrap returns records, it stores none.
	e.drv.Fail(kmsfake.ErrOutage)
	e.kr.EvictProject(pid)
	if _, err := e.kr.Rewrap(ctx, e.org, pid, &to); err == nil {
		t.Fatal("rewrap succeeded while the source KMS is down")
	}
	keys, _ := e.st.ListProjectKeys(ctx, e.org, pid)
	for _, k := range keys {
		if k.ExternalKeyID != e.ek.ID {
			t.Fatal("rewrap wrote to the store")
		}
	}
}

func TestValidate(t *testing.T) {
	e := newEnv(t, 100)
	if _, err := e.kr.Validate(context.Background(), &e.ek); err != nil {
		t.Fatal(err)
	}
	e.drv.Fail(kmsfake.ErrRevoked)
	if _, err := e.kr.Validate(context.Background(), &e.ek); kms.ClassOf(err) != kms.Revoked {
		t.Fatalf("Validate = %v", err)
	}
	evs, err := e.st.ListAudit(context.Background(), e.org, store.AuditFilter{Types: []string{"kms.call"}, Limit: 10})
	if err != nil || len(evs) != 2 {
		t.Fatalf("kms.call audit events = %d, %v", len(evs), err)
	}
}

func TestUnwrapRacingReKeyIsNotCached(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	release := e.drv.Hold()
	done := make(chan error, 1)
	go func() { _, err := e.kr.Key(ctx, e.org, pid, 1); done <- err }()
	for e.drv.Unwraps.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// A re-key commits and evicts the project while the old unwrap is in
	// flight: its result, tied to the old key's gate, must not be cached.
	e.kr.EvictProject(pid)
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := e.kr.CachedKeys(); n != 0 {
		t.Fatalf("a key unwrapped across a re-key was cached (%d)", n)
	}
}

func TestWaiterCancellation(t *testing.T) {
	e := newEnv(t, 100)
	pid, want := e.newProject(t, &e.ek)
	release := e.drv.Hold()
	leader := make(chan error, 1)
	go func() {
		k, err := e.kr.Key(context.Background(), e.org, pid, 1)
		if err == nil && !bytes.Equal(k.Bytes(), want.Bytes()) {
			err = errors.New("leader got a wrong (zeroed?) key")
		}
		leader <- err
	}()
	for e.drv.Unwraps.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() { _, err := e.kr.Key(ctx, e.org, pid, 1); waiter <- err }()
	cancel()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	release()
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
}

// One recorded KMS operation that makes several requests (a validation:
// read, encrypt, decrypt, read) names every request id in its kms.call
// event, so each request can be found in the KMS's own logs.
func TestCallRecordsEveryRequestID(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	err := e.kr.Call(ctx, &e.ek, "validate", func(ctx context.Context, p kms.Provider) error {
		ci := kms.CallInfoFrom(ctx)
		ci.Record("req-1")
		ci.Record("req-2")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := e.st.ListAudit(ctx, e.org, store.AuditFilter{Types: []string{"kms.call"}, Limit: 10})
	if err != nil || len(evs) != 1 {
		t.Fatalf("kms.call events = %d, %v", len(evs), err)
	}
	var ev keyring.KMSCallEvent
	if err := json.Unmarshal(evs[0].Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.RequestID != "req-2" || len(ev.RequestIDs) != 2 || ev.RequestIDs[0] != "req-1" || ev.RequestIDs[1] != "req-2" {
		t.Fatalf("kms.call event = %+v", ev)
	}
}
