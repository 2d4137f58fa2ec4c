package probe_test

import (
	"context"
	"errors"
	"path/filepath"
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
)

type env struct {
	st  store.Store
	svc *lifecycle.Service
	kr  *keyring.Keyring
	drv *kmsfake.Driver
	p   *probe.Prober
	org string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := kmsfake.New()
	svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New()), drv),
		Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}})
	e := &env{st: st, svc: svc, kr: svc.Keyring(), drv: drv, org: ids.New("org-")}
	e.p = probe.New(probe.Config{Store: st, Service: svc, Interval: time.Hour, EncryptEvery: 1})
	if err := st.CreateOrg(context.Background(), store.Org{ID: e.org, Name: "o", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) extKey(t *testing.T, typ string) store.ExternalKey {
	t.Helper()
	p, err := e.svc.Check(typ, e.org, nil)
	if err != nil {
		t.Fatal(err)
	}
	ek := store.ExternalKey{ID: ids.New("extkey_"), OrgID: e.org, Type: typ, Name: "k", Purpose: "ekm", Params: p, Status: store.StatusValid, CreatedAt: time.Now()}
	if err := e.st.CreateExternalKey(context.Background(), ek); err != nil {
		t.Fatal(err)
	}
	return ek
}

func (e *env) project(t *testing.T, ek store.ExternalKey) string {
	t.Helper()
	ctx := context.Background()
	pid := ids.New("proj_")
	rec, pk, err := e.svc.NewVersion(ctx, e.org, pid, 1, &ek)
	if err != nil {
		t.Fatal(err)
	}
	pk.Zero()
	err = e.st.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateProject(ctx, store.Project{ID: pid, OrgID: e.org, Name: "p", ExternalKeyID: ek.ID, CreatedAt: time.Now(), CurrentKeyVersion: 1}); err != nil {
			return err
		}
		return q.PutProjectKey(ctx, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func (e *env) status(t *testing.T, id string) store.ExternalKey {
	t.Helper()
	ek, err := e.st.GetExternalKey(context.Background(), e.org, id)
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

func (e *env) events(t *testing.T, typ string) int {
	t.Helper()
	evs, err := e.st.ListAudit(context.Background(), e.org, store.AuditFilter{Types: []string{typ}, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func TestRevocationAndRestore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ek := e.extKey(t, kmsfake.Type)
	pid := e.project(t, ek)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	e.p.Round(ctx)
	if s := e.status(t, ek.ID).Status; s != store.StatusValid {
		t.Fatalf("status %q", s)
	}

	e.drv.Fail(kmsfake.ErrRevoked)
	e.p.Round(ctx)
	e.p.Round(ctx)
	got := e.status(t, ek.ID)
	if got.Status != store.StatusUnavailable || got.StatusCode != kmsfake.ErrRevoked.Code {
		t.Fatalf("after revocation: %+v", got)
	}
	// The key was cached, but reads now fail fast without a KMS call.
	before := e.drv.Unwraps.Load()
	_, err := e.kr.Key(ctx, e.org, pid, 1)
	var u *keyring.UnavailableError
	if !errors.As(err, &u) || u.Class != kms.Revoked {
		t.Fatalf("read after revocation: %v", err)
	}
	if e.drv.Unwraps.Load() != before {
		t.Fatal("read after revocation reached the KMS")
	}
	if n := e.events(t, "external_key.unavailable"); n != 1 {
		t.Fatalf("%d unavailable events for one revocation", n)
	}

	e.drv.Fail(nil)
	e.p.Round(ctx)
	if s := e.status(t, ek.ID).Status; s != store.StatusValid {
		t.Fatalf("after restore: %q", s)
	}
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatalf("read after restore: %v", err)
	}
	if n := e.events(t, "external_key.restored"); n != 1 {
		t.Fatalf("%d restored events", n)
	}
}

func TestOutageDegradesWithoutEvicting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ek := e.extKey(t, kmsfake.Type)
	pid := e.project(t, ek)
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
	e.drv.Fail(kmsfake.ErrOutage)
	e.p.Round(ctx)
	if s := e.status(t, ek.ID).Status; s != store.StatusDegraded {
		t.Fatalf("status %q, want degraded", s)
	}
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatalf("cached key not served during outage: %v", err)
	}
	e.drv.Fail(nil)
	e.p.Round(ctx)
	if s := e.status(t, ek.ID).Status; s != store.StatusValid {
		t.Fatalf("status %q after outage ended", s)
	}
}

func TestLoadIsIndependentOfRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ek := e.extKey(t, kmsfake.Type)
	var pids []string
	for range 5 {
		pids = append(pids, e.project(t, ek))
	}
	p := probe.New(probe.Config{Store: e.st, Service: e.svc, Interval: time.Hour, EncryptEvery: 10})
	start := e.drv.Unwraps.Load()
	for range 10 {
		p.Round(ctx)
		for _, pid := range pids {
			for range 20 {
				k, err := e.kr.Key(ctx, e.org, pid, 1)
				if err != nil {
					t.Fatal(err)
				}
				k.Zero()
			}
		}
	}
	// 10 probe decrypts + one unwrap per project (then cached).
	if n := e.drv.Unwraps.Load() - start; n != 10+5 {
		t.Fatalf("%d unwraps for 10 rounds and 1000 reads, want 15", n)
	}
	if n := e.drv.Describs.Load(); n != 1 {
		t.Fatalf("%d describes in 10 rounds with EncryptEvery=10, want 1", n)
	}
}

func TestKEKRotationRewrapsInBackground(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ek := e.extKey(t, local.Type)
	pid := e.project(t, ek)
	if _, err := e.svc.RotateProjectKey(ctx, "", e.org, pid, lifecycle.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.p.Round(ctx) // first sight of the current version
	v1 := e.status(t, ek.ID).CurrentKEKVersion
	if v1 == "" {
		t.Fatal("current KEK version not recorded")
	}
	// The customer rotates its KEK (for a local key: a new version).
	params := ek.Params
	params[local.ParamKeyVersion] = "2"
	if err := e.st.UpdateExternalKeyParams(ctx, e.org, ek.ID, params); err != nil {
		t.Fatal(err)
	}
	ek = e.status(t, ek.ID)
	p := probe.New(probe.Config{Store: e.st, Service: e.svc, Interval: time.Hour, EncryptEvery: 1, RewrapPerRound: 1})
	p.Round(ctx)
	after := e.status(t, ek.ID)
	if after.CurrentKEKVersion == v1 {
		t.Fatal("rotation not noticed")
	}
	counts, _ := e.st.CountProjectKeysByKEKVersion(ctx, e.org, ek.ID)
	if counts[v1] != 1 || counts[after.CurrentKEKVersion] != 1 {
		t.Fatalf("after one round with budget 1: %v", counts)
	}
	p.Round(ctx)
	counts, _ = e.st.CountProjectKeysByKEKVersion(ctx, e.org, ek.ID)
	if counts[v1] != 0 || counts[after.CurrentKEKVersion] != 2 {
		t.Fatalf("after two rounds: %v", counts)
	}
	e.kr.EvictProject(pid)
	for v := 1; v <= 2; v++ {
		if _, err := e.kr.Key(ctx, e.org, pid, v); err != nil {
			t.Fatalf("version %d unreadable after rewrap: %v", v, err)
		}
	}
	if e.events(t, "external_key.rotated") != 1 || e.events(t, "external_key.rewrapped") != 2 {
		t.Fatal("rotation/rewrap not audited")
	}
}

// A round checks every key in use, reading them a page at a time, with at
// most Concurrency checks at once; keys that left use are forgotten.
func TestRoundIsBounded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var keys []store.ExternalKey
	var pids []string
	for range 5 {
		ek := e.extKey(t, kmsfake.Type)
		keys = append(keys, ek)
		pids = append(pids, e.project(t, ek))
	}
	p := probe.New(probe.Config{Store: e.st, Service: e.svc, Interval: time.Hour, EncryptEvery: 100, Concurrency: 2, PageSize: 2})
	release := e.drv.Hold()
	done := make(chan struct{})
	go func() { p.Round(ctx); close(done) }()
	// Two checks start and wait on the KMS; the round cannot start a third.
	for e.drv.Unwraps.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a third to start, were it allowed
	if n := e.drv.Unwraps.Load(); n != 2 {
		t.Fatalf("%d checks started while 2 were held, limit 2", n)
	}
	release()
	<-done
	if got := e.drv.Unwraps.Load(); got != 5 {
		t.Fatalf("%d probe decrypts for 5 keys", got)
	}
	if m := e.drv.MaxInFlight.Load(); m > 2 {
		t.Fatalf("%d checks ran at once, limit 2", m)
	}
	if p.Tracked() != 5 {
		t.Fatalf("tracking %d keys", p.Tracked())
	}
	// Two keys leave use (their projects are archived): the next round
	// forgets them.
	for _, pid := range pids[:2] {
		pr, err := e.st.GetProject(ctx, e.org, pid)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		pr.ArchivedAt = &now
		if err := e.st.UpdateProject(ctx, pr); err != nil {
			t.Fatal(err)
		}
	}
	p.Round(ctx)
	if p.Tracked() != 3 {
		t.Fatalf("tracking %d keys after two left use", p.Tracked())
	}
}

// A customer whose KMS hangs holds at most PerOrg of the round's slots, and
// each of its checks ends at CheckTimeout (degraded): another customer's key
// is checked meanwhile, not after them.
func TestSlowCustomerDoesNotStallOthers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var hung []store.ExternalKey
	for range 3 {
		ek := e.extKey(t, kmsfake.Type) // the fake driver: held below
		e.project(t, ek)
		hung = append(hung, ek)
	}
	otherOrg := ids.New("org-")
	if err := e.st.CreateOrg(ctx, store.Org{ID: otherOrg, Name: "b", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	orgA := e.org
	e.org = otherOrg
	fine := e.extKey(t, local.Type)
	e.project(t, fine)
	e.org = orgA

	release := e.drv.Hold()
	defer release()
	p := probe.New(probe.Config{Store: e.st, Service: e.svc, Interval: time.Hour, EncryptEvery: 1, Concurrency: 2, PerOrg: 1, CheckTimeout: 300 * time.Millisecond})
	done := make(chan struct{})
	go func() { p.Round(ctx); close(done) }()
	// The other customer's key is checked (its KEK version recorded) while
	// the first customer's checks hang.
	for {
		k, err := e.st.GetExternalKey(ctx, otherOrg, fine.ID)
		if err != nil {
			t.Fatal(err)
		}
		if k.CurrentKEKVersion != "" {
			break
		}
		select {
		case <-done:
			t.Fatal("round ended before the other customer's key was checked")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if n := e.drv.MaxInFlight.Load(); n > 1 {
		t.Fatalf("%d checks of one org at once, limit 1", n)
	}
	<-done
	for _, ek := range hung {
		if s := e.status(t, ek.ID).Status; s != store.StatusDegraded {
			t.Fatalf("hung key %s is %q, want degraded after the check timeout", ek.ID, s)
		}
	}
}

// A customer policy that refuses one project (kms.ScopeProject) closes that
// project's gate only: on a request path at once, and from the probe; the
// org's other projects on the key keep working; allowing the project again
// opens its gate at the next round. Each transition is one audit event.
func TestProjectScopedRefusal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.drv.SetProjectScoped(true)
	ek := e.extKey(t, kmsfake.Type)
	denied, other := e.project(t, ek), e.project(t, ek)
	for _, pid := range []string{denied, other} {
		if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
			t.Fatal(err)
		}
	}
	e.drv.DenyProject(denied)
	e.p.Round(ctx)
	var u *keyring.UnavailableError
	if _, err := e.kr.Key(ctx, e.org, denied, 1); !errors.As(err, &u) || u.ProjectID != denied || u.Class != kms.Revoked {
		t.Fatalf("denied project after a round: %v", err)
	}
	if _, err := e.kr.Key(ctx, e.org, other, 1); err != nil {
		t.Fatalf("another project of the key refused: %v", err)
	}
	if s := e.status(t, ek.ID).Status; s != store.StatusValid {
		t.Fatalf("key status %q: one project's refusal is not the key's", s)
	}
	e.p.Round(ctx)
	if n := e.events(t, "external_key.project_unavailable"); n != 1 {
		t.Fatalf("%d project_unavailable events over two rounds", n)
	}
	e.drv.AllowProject(denied)
	e.p.Round(ctx)
	if _, err := e.kr.Key(ctx, e.org, denied, 1); err != nil {
		t.Fatalf("denied project after access came back: %v", err)
	}
	if n := e.events(t, "external_key.project_restored"); n != 1 {
		t.Fatalf("%d project_restored events", n)
	}
	// A request finds the refusal first (its cache dropped): refused at once.
	e.kr.EvictProject(denied)
	e.drv.DenyProject(denied)
	if _, err := e.kr.Key(ctx, e.org, denied, 1); !errors.As(err, &u) || u.ProjectID != denied {
		t.Fatalf("request-path refusal: %v", err)
	}
	if _, err := e.kr.Key(ctx, e.org, other, 1); err != nil {
		t.Fatalf("another project after a request-path refusal: %v", err)
	}
}
