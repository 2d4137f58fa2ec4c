package rotation_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/rotation"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	st  store.Store
	svc *lifecycle.Service
	kr  *keyring.Keyring
	clk *clock
	org string
	ek  store.ExternalKey
}

const period = 30 * 24 * time.Hour

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := &env{st: st, clk: clk, org: ids.New("org-")}
	e.svc = lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New())),
		Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default", local.ParamKeyVersion: "1"}}, Now: clk.Now})
	e.kr = e.svc.Keyring()
	if err := st.CreateOrg(ctx, store.Org{ID: e.org, Name: "o", CreatedAt: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	e.ek = store.ExternalKey{ID: ids.New("extkey_"), OrgID: e.org, Type: local.Type, Name: "k", Purpose: "ekm",
		Params: map[string]string{local.ParamKeyID: "cust", local.ParamKeyVersion: "1"}, Status: store.StatusValid, CreatedAt: clk.Now()}
	if err := st.CreateExternalKey(ctx, e.ek); err != nil {
		t.Fatal(err)
	}
	return e
}

// project creates a project on the customer key (or the default key).
func (e *env) project(t *testing.T, customer bool) string {
	t.Helper()
	ctx := context.Background()
	id := ids.New("proj_")
	var ek *store.ExternalKey
	p := store.Project{ID: id, OrgID: e.org, Name: "p", CreatedAt: e.clk.Now(), CurrentKeyVersion: 1}
	if customer {
		ek, p.ExternalKeyID = &e.ek, e.ek.ID
	}
	rec, pk, err := e.svc.NewVersion(ctx, e.org, id, 1, ek)
	if err != nil {
		t.Fatal(err)
	}
	pk.Zero()
	err = e.st.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateProject(ctx, p); err != nil {
			return err
		}
		return q.PutProjectKey(ctx, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) version(t *testing.T, pid string) int {
	t.Helper()
	p, err := e.st.GetProject(context.Background(), e.org, pid)
	if err != nil {
		t.Fatal(err)
	}
	return p.CurrentKeyVersion
}

func (e *env) rotator(t *testing.T, maxPerRound int) *rotation.Rotator {
	t.Helper()
	r, err := rotation.New(rotation.Config{Store: e.st, Service: e.svc, Period: period, MaxPerRound: maxPerRound, Now: e.clk.Now, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRotatesOnlyDueProjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old := e.project(t, true)
	e.clk.Advance(period / 2)
	young := e.project(t, true)
	r := e.rotator(t, 0)

	res, err := r.Round(ctx)
	if err != nil || res != (rotation.RoundResult{}) {
		t.Fatalf("nothing due yet: %+v %v", res, err)
	}
	e.clk.Advance(period / 2)
	res, err = r.Round(ctx)
	if err != nil || res.Rotated != 1 || e.version(t, old) != 2 || e.version(t, young) != 1 {
		t.Fatalf("round: %+v %v, versions %d %d", res, err, e.version(t, old), e.version(t, young))
	}
	// The new version is fresh: nothing more until it is a period old.
	if res, _ := r.Round(ctx); res.Rotated != 0 {
		t.Fatalf("rotated again: %+v", res)
	}
	e.clk.Advance(period / 2)
	if res, _ := r.Round(ctx); res.Rotated != 1 || e.version(t, young) != 2 || e.version(t, old) != 2 {
		t.Fatalf("second project: %+v", res)
	}
	// The new version is wrapped by the project's key and usable.
	k, err := e.kr.Key(ctx, e.org, old, 2)
	if err != nil {
		t.Fatal(err)
	}
	k.Zero()
	rec, _ := e.st.GetProjectKey(ctx, e.org, old, 2)
	if rec.ExternalKeyID != e.ek.ID {
		t.Fatalf("new version wrapped by %q", rec.ExternalKeyID)
	}
	evs, err := e.st.ListAudit(ctx, e.org, store.AuditFilter{Types: []string{"project.key_rotated"}})
	if err != nil || len(evs) != 2 || evs[1].ProjectID != old {
		t.Fatalf("audit: %v %v", evs, err)
	}
}

func TestBoundedPerRound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var pids []string
	for range 5 {
		pids = append(pids, e.project(t, true))
	}
	e.clk.Advance(period)
	r := e.rotator(t, 2)
	for i, want := range []rotation.RoundResult{{Rotated: 2, Deferred: 3}, {Rotated: 2, Deferred: 1}, {Rotated: 1}, {}} {
		res, err := r.Round(ctx)
		if err != nil || res != want {
			t.Fatalf("round %d: %+v %v, want %+v", i, res, err, want)
		}
	}
	for _, pid := range pids {
		if v := e.version(t, pid); v != 2 {
			t.Fatalf("project at version %d", v)
		}
	}
}

func TestSkipsArchived(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid := e.project(t, true)
	live := e.project(t, true)
	p, _ := e.st.GetProject(ctx, e.org, pid)
	now := e.clk.Now()
	p.ArchivedAt = &now
	if err := e.st.UpdateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * period)
	if res, err := e.rotator(t, 0).Round(ctx); err != nil || res.Rotated != 1 || e.version(t, pid) != 1 || e.version(t, live) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestReplicasRotateOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var pids []string
	for range 8 {
		pids = append(pids, e.project(t, true))
	}
	e.clk.Advance(period)
	var mu sync.Mutex
	total := rotation.RoundResult{}
	var wg sync.WaitGroup
	for range 3 {
		r := e.rotator(t, 0)
		wg.Go(func() {
			res, err := r.Round(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total.Rotated += res.Rotated
			total.Failed += res.Failed
			mu.Unlock()
		})
	}
	wg.Wait()
	if total.Rotated != 8 || total.Failed != 0 {
		t.Fatalf("replicas: %+v", total)
	}
	for _, pid := range pids {
		if v := e.version(t, pid); v != 2 {
			t.Fatalf("project rotated to %d", v)
		}
	}
	evs, _ := e.st.ListAudit(ctx, e.org, store.AuditFilter{Types: []string{"project.key_rotated"}})
	if len(evs) != 8 {
		t.Fatalf("%d rotation events", len(evs))
	}
}

func TestUnavailableKeyRetried(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid := e.project(t, true)
	e.clk.Advance(period)
	e.kr.MarkUnavailable(e.ek.ID, &keyring.UnavailableError{ExternalKeyID: e.ek.ID, Class: kms.Revoked, Code: "test", Message: "revoked"})
	r := e.rotator(t, 0)
	if res, err := r.Round(ctx); err != nil || res.Failed != 1 || e.version(t, pid) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	e.kr.MarkAvailable(e.ek.ID)
	if res, err := r.Round(ctx); err != nil || res.Rotated != 1 || e.version(t, pid) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRunUntilCancelled(t *testing.T) {
	e := newEnv(t)
	pid := e.project(t, true)
	e.clk.Advance(period)
	r := e.rotator(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for e.version(t, pid) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not rotate the due project")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Later rounds find the new version fresh; advancing the clock makes it due.
	e.clk.Advance(period)
	for e.version(t, pid) != 3 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not keep rotating")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestNeedsPeriod(t *testing.T) {
	if _, err := rotation.New(rotation.Config{}); err == nil {
		t.Fatal("zero period accepted")
	}
}

func TestRotatesDefaultKeyProjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid := e.project(t, false)
	e.clk.Advance(period)
	res, err := e.rotator(t, 0).Round(ctx)
	if err != nil || res.Rotated != 1 || e.version(t, pid) != 2 {
		t.Fatalf("default-key project: %+v %v, version %d", res, err, e.version(t, pid))
	}
	rec, err := e.st.GetProjectKey(ctx, e.org, pid, 2)
	if err != nil || rec.ExternalKeyID != "" {
		t.Fatalf("new version of a default-key project wrapped by %q (%v)", rec.ExternalKeyID, err)
	}
}
