package keyring_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/lifecycle/lifecycletest"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

type env struct {
	*lifecycletest.Env
	st    store.Store
	kr    *keyring.Keyring
	drv   *kmsfake.Driver
	org   string
	ek    store.ExternalKey
	clock *lifecycletest.Clock
}

func newEnv(t *testing.T, cacheSize int) *env {
	t.Helper()
	le := lifecycletest.New(t, lifecycletest.Options{CacheSize: cacheSize})
	e := &env{Env: le, st: le.Store, kr: le.Keyring, drv: le.Fake, org: le.Org, clock: le.Clock}
	e.ek = le.ExternalKey(t, kmsfake.Type)
	return e
}

func (e *env) newExtKey(t *testing.T, typ string) store.ExternalKey { return e.ExternalKey(t, typ) }

// newProject stores a project with version 1 of its key wrapped by ek.
func (e *env) newProject(t *testing.T, ek *store.ExternalKey) (string, secret.Key) {
	return e.Project(t, ek)
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

// The keys handed out are clones of one cached key: each caller owns and
// zeroes its copy, and state derived from the key (the envelope's project
// cipher, a secret.Memo) is computed once, not once per request.
func TestKeysShareDerivedState(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, &e.ek)
	var memo secret.Memo[int]
	var derived atomic.Int64
	derive := func([]byte) int { return int(derived.Add(1)) }
	release := e.drv.Hold()
	var wg sync.WaitGroup
	for range 4 { // waiters of the coalesced unwrap
		wg.Go(func() {
			k, err := e.kr.Key(ctx, e.org, pid, 1)
			if err != nil {
				t.Error(err)
				return
			}
			memo.Get(k, derive)
			k.Zero()
		})
	}
	for e.drv.Unwraps.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	// Waiters that reach the Memo at the same moment may each derive once
	// (a Memo does not serialise first uses); every later read is served.
	waiters := derived.Load()
	if waiters < 1 || waiters > 4 {
		t.Fatalf("%d derivations for 4 waiters of one unwrap, want 1 to 4", waiters)
	}
	for range 4 { // cache hits
		_, k, err := e.kr.Current(ctx, e.org, pid)
		if err != nil {
			t.Fatal(err)
		}
		memo.Get(k, derive)
		k.Zero()
	}
	if n := derived.Load() - waiters; n != 0 {
		t.Fatalf("%d derivations for 4 cache hits after the unwrap, want 0 (clones share their origin's entry)", n)
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
	if _, _, err := e.Service.NewVersion(ctx, e.org, pid, 2, &e.ek); !errors.As(err, &u) {
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

// A project re-keyed by another process (a replica, `ekm org set-key`) is
// not served from this keyring's cache under its old key's gate: KeyOf,
// given the project as just read, drops a cached key wrapped by another
// external key and reads it again, under the new key's gate.
func TestKeyOfFollowsAReKeyElsewhere(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	pid, _ := e.newProject(t, nil) // the operator's key: no gate
	p, err := e.st.GetProject(ctx, e.org, pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kr.KeyOf(ctx, p, 1); err != nil {
		t.Fatal(err)
	}
	// Another process moves the project under e.ek (this keyring is not told).
	recs, err := e.Service.Rewrap(ctx, e.org, pid, &e.ek)
	if err != nil {
		t.Fatal(err)
	}
	p.ExternalKeyID = e.ek.ID
	err = e.st.InTx(ctx, func(q store.Queries) error {
		for _, r := range recs {
			if err := q.PutProjectKey(ctx, r); err != nil {
				return err
			}
		}
		return q.UpdateProject(ctx, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.kr.MarkUnavailable(e.ek.ID, &keyring.UnavailableError{ExternalKeyID: e.ek.ID, Class: kms.Revoked, Code: "x", Message: "revoked"})
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatalf("Key (no project given) still serves from the cache, as documented: %v", err)
	}
	var u *keyring.UnavailableError
	if _, err := e.kr.KeyOf(ctx, p, 1); !errors.As(err, &u) {
		t.Fatalf("KeyOf after a re-key elsewhere: %v, want the new key's gate", err)
	}
}

// EvictAll drops every cached key, and an unwrap in flight when it ran is
// not cached (package cluster's reset: changes may have been missed).
func TestEvictAll(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	p1, _ := e.newProject(t, &e.ek)
	p2, _ := e.newProject(t, &e.ek)
	if _, err := e.kr.Key(ctx, e.org, p1, 1); err != nil {
		t.Fatal(err)
	}
	release := e.drv.Hold()
	done := make(chan error)
	go func() { _, err := e.kr.Key(ctx, e.org, p2, 1); done <- err }()
	for e.drv.Unwraps.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	e.kr.EvictAll()
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := e.kr.CachedKeys(); n != 0 {
		t.Fatalf("%d keys cached after EvictAll", n)
	}
	if _, err := e.kr.Key(ctx, e.org, p1, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.drv.Unwraps.Load(); n != 3 {
		t.Fatalf("%d unwraps, want 3 (the evicted key read again)", n)
	}
}

// panicky serves kmsfake keys through e.Fake, but its Unwrap can be made to
// panic (a bug in a provider or its SDK). Unwrap signals entered and waits
// for release before it does anything.
type panicky struct {
	*kmsfake.Driver
	broken  atomic.Bool
	unwraps atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func (d *panicky) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.Driver.Open(org, p)
	return &panickyProvider{Provider: inner, d: d}, err
}

type panickyProvider struct {
	kms.Provider
	d *panicky
}

func (p *panickyProvider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	p.d.unwraps.Add(1)
	select {
	case p.d.entered <- struct{}{}:
	default:
	}
	<-p.d.release
	if p.d.broken.Load() {
		var m map[string]int
		m["provider bug"]++ // a nil map write: a runtime panic
	}
	return p.Provider.Unwrap(ctx, w, aad)
}

// A coalesced unwrap whose provider panics completes for every caller: the
// leader and the waiters all get the same retryable outage (never a
// revocation: no gate closes, nothing is cached), the panic is logged
// without its value, and once the provider works again the next call
// unwraps afresh (the flight did not stay in the inflight map).
func TestPanickingUnwrapReleasesWaiters(t *testing.T) {
	e := newEnv(t, 100)
	pid, want := e.newProject(t, &e.ek)
	d := &panicky{Driver: e.drv, entered: make(chan struct{}, 1), release: make(chan struct{})}
	d.broken.Store(true)
	var logs safeBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	kr := keyring.New(keyring.Config{Store: e.st, Keys: kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(d), Logger: logger}),
		Logger: logger})
	const waiters = 20
	joined := make(chan struct{}, waiters)
	keyring.SetJoinedHook(kr, func() { joined <- struct{}{} })

	ctx := context.Background()
	errs := make(chan error, waiters+1)
	call := func() { _, err := kr.Key(ctx, e.org, pid, 1); errs <- err }
	go call() // the leader
	<-d.entered
	for range waiters {
		go call()
	}
	for range waiters {
		<-joined
	}
	close(d.release)
	for range waiters + 1 {
		err := <-errs
		var u *keyring.UnavailableError
		// The call layer recovers the provider's panic (kms.ErrProviderPanicked);
		// the keyring's own recover (ErrPanicked) covers a panic outside it.
		if !errors.As(err, &u) || u.Class != kms.Outage || !u.Retryable() ||
			!(errors.Is(err, keyring.ErrPanicked) || errors.Is(err, kms.ErrProviderPanicked)) {
			t.Fatalf("a caller of a panicking unwrap got %v, want a retryable outage wrapping ErrProviderPanicked", err)
		}
	}
	if n := d.unwraps.Load(); n != 1 {
		t.Fatalf("%d unwraps, want 1 (coalesced)", n)
	}
	if kr.Unavailable(e.ek.ID) != nil || kr.ProjectUnavailable(e.ek.ID, pid) != nil || kr.CachedKeys() != 0 {
		t.Fatal("a panic closed a gate or cached a key")
	}
	if l := logs.String(); !strings.Contains(l, "panicked") || !strings.Contains(l, "assignment to entry in nil map") ||
		!strings.Contains(l, "panickyProvider") {
		t.Fatalf("panic not logged with its kind and place: %s", l)
	}

	d.broken.Store(false)
	got, err := kr.Key(ctx, e.org, pid, 1)
	if err != nil || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("after the provider is fixed: %v", err)
	}
	if n := d.unwraps.Load(); n != 2 {
		t.Fatalf("%d unwraps, want 2", n)
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// At the bound of closed project gates the oldest closed (or confirmed)
// gate is forgotten, one per new gate — not all of them at once.
func TestProjectGatesEvictOldestOnly(t *testing.T) {
	e := newEnv(t, 100)
	keyring.SetMaxProjectGates(e.kr, 3)
	deny := func(pid string) bool {
		return e.kr.MarkProjectUnavailable(e.ek.ID, pid, &keyring.UnavailableError{ExternalKeyID: e.ek.ID, ProjectID: pid, Class: kms.Revoked, Code: "x", Message: "denied"})
	}
	closed := func(pid string) bool { return e.kr.ProjectUnavailable(e.ek.ID, pid) != nil }
	for _, p := range []string{"p1", "p2", "p3"} {
		if !deny(p) {
			t.Fatalf("%s: gate was already closed", p)
		}
	}
	if deny("p1") { // confirmed again: now the most recent
		t.Fatal("p1: a second close reported a transition")
	}
	deny("p4")
	if closed("p2") || !closed("p1") || !closed("p3") || !closed("p4") || e.kr.ClosedProjectGates() != 3 {
		t.Fatalf("after p4: p1 %v p2 %v p3 %v p4 %v (%d closed); want only p2, the oldest, forgotten",
			closed("p1"), closed("p2"), closed("p3"), closed("p4"), e.kr.ClosedProjectGates())
	}
	if !e.kr.MarkProjectAvailable(e.ek.ID, "p3") || e.kr.ClosedProjectGates() != 2 {
		t.Fatal("opening p3")
	}
	deny("p5")
	if !closed("p1") || !closed("p4") || !closed("p5") {
		t.Fatal("a gate was forgotten below the bound")
	}
}

// A forgotten project gate fails closed where it matters: nothing of the
// project is served from memory, the next use asks the KMS, and the KMS's
// refusal closes the gate again.
func TestForgottenProjectGateClosesAgain(t *testing.T) {
	e := newEnv(t, 100)
	ctx := context.Background()
	keyring.SetMaxProjectGates(e.kr, 2)
	pid, _ := e.newProject(t, &e.ek)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	e.drv.DenyProject(pid)
	e.kr.EvictProject(pid) // its key expired, say
	var u *keyring.UnavailableError
	if _, err := e.kr.Key(ctx, e.org, pid, 1); !errors.As(err, &u) || u.Class != kms.Revoked || u.ProjectID != pid {
		t.Fatalf("denied project: %v", err)
	}
	if e.kr.ProjectUnavailable(e.ek.ID, pid) == nil {
		t.Fatal("the refusal did not close the project's gate")
	}
	for _, p := range []string{"other1", "other2"} {
		e.kr.MarkProjectUnavailable(e.ek.ID, p, &keyring.UnavailableError{ExternalKeyID: e.ek.ID, ProjectID: p, Class: kms.Revoked, Code: "x", Message: "denied"})
	}
	if e.kr.ProjectUnavailable(e.ek.ID, pid) != nil {
		t.Fatal("the oldest gate was not forgotten")
	}
	before := e.drv.Unwraps.Load()
	if _, err := e.kr.Key(ctx, e.org, pid, 1); !errors.As(err, &u) || u.Class != kms.Revoked {
		t.Fatalf("a project whose gate was forgotten: %v, want the KMS's refusal", err)
	}
	if e.drv.Unwraps.Load() != before+1 || e.kr.ProjectUnavailable(e.ek.ID, pid) == nil {
		t.Fatal("the KMS was not asked, or its refusal did not close the gate again")
	}
}

// panickyStore is a store whose external key read, while broken, waits to
// be released and then panics (a bug outside any KMS provider, which the
// call layer's recover does not cover).
type panickyStore struct {
	store.Store
	broken           atomic.Bool
	entered, release chan struct{}
}

func (s *panickyStore) GetExternalKey(ctx context.Context, orgID, id string) (store.ExternalKey, error) {
	if s.broken.Load() {
		s.entered <- struct{}{}
		<-s.release
		var m map[string]int
		m["store bug"]++
	}
	return s.Store.GetExternalKey(ctx, orgID, id)
}

// A panic in the keyring's own read of a project key (not the provider's)
// also completes the coalesced read for every caller with the keyring's
// retryable ErrPanicked, and the next read works.
func TestPanickingReadReleasesWaiters(t *testing.T) {
	e := newEnv(t, 100)
	pid, want := e.newProject(t, &e.ek)
	st := &panickyStore{Store: e.st, entered: make(chan struct{}, 1), release: make(chan struct{})}
	st.broken.Store(true)
	var logs safeBuffer
	kr := keyring.New(keyring.Config{Store: st, Keys: kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(e.drv)}),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const waiters = 10
	joined := make(chan struct{}, waiters)
	keyring.SetJoinedHook(kr, func() { joined <- struct{}{} })
	ctx := context.Background()
	errs := make(chan error, waiters+1)
	call := func() { _, err := kr.Key(ctx, e.org, pid, 1); errs <- err }
	go call()
	<-st.entered
	for range waiters {
		go call()
	}
	for range waiters {
		<-joined
	}
	close(st.release)
	for range waiters + 1 {
		err := <-errs
		var u *keyring.UnavailableError
		if !errors.As(err, &u) || u.Class != kms.Outage || !u.Retryable() || !errors.Is(err, keyring.ErrPanicked) {
			t.Fatalf("a caller of a panicking read got %v, want a retryable outage wrapping ErrPanicked", err)
		}
	}
	if l := logs.String(); !strings.Contains(l, "assignment to entry in nil map") || strings.Contains(l, "store bug") {
		t.Fatalf("panic not logged with its kind only: %s", l)
	}
	st.broken.Store(false)
	got, err := kr.Key(ctx, e.org, pid, 1)
	if err != nil || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("after the store is fixed: %v", err)
	}
}
