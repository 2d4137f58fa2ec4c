package lifecycle_test

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync/atomic"
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

// hangDriver is the fake KMS of a type whose customer can refuse single
// projects, where (while hang is set) every decrypt under a project's
// associated data hangs until its caller gives up: a KMS slow per project.
type hangDriver struct {
	*kmsfake.Driver
	hang *atomic.Bool
	fast *atomic.Value // a project id whose decrypts do not hang (the key's sample)
}

func (hangDriver) Type() string { return "hang" }
func (d hangDriver) Spec() kms.Spec {
	s := d.Driver.Spec()
	s.Type, s.ProjectScoped = "hang", true
	return s
}
func (d hangDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.Driver.Open(org, p)
	return hangProvider{inner, d.hang, d.fast}, err
}

type hangProvider struct {
	kms.Provider
	hang *atomic.Bool
	fast *atomic.Value
}

func (p hangProvider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	if fast, _ := p.fast.Load().(string); aad.ProjectID != "" && aad.ProjectID != fast && p.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return p.Provider.Unwrap(ctx, w, aad)
}

// M1: per-project decrypts that run out of time (100 projects, each
// hanging but the key's own check) do not make the key degraded: its
// health is decided before any project is probed; no project is denied
// and the cursor stays where it was, so the next check probes them first.
func TestSlowProjectsDoNotDegradeTheKey(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	hang, fast := &atomic.Bool{}, &atomic.Value{}
	svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New()), hangDriver{kmsfake.New(), hang, fast}),
		Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}})
	org := ids.New("org-")
	if err := st.CreateOrg(ctx, store.Org{ID: org, Name: "o", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	p, err := svc.Check("hang", org, nil)
	if err != nil {
		t.Fatal(err)
	}
	ek := store.ExternalKey{ID: ids.New("extkey_"), OrgID: org, Type: "hang", Name: "k", Purpose: "ekm", Params: p, Status: store.StatusValid, CreatedAt: time.Now()}
	if err := st.CreateExternalKey(ctx, ek); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := svc.CreateProject(ctx, "", org, "p", ek.ID); err != nil {
			t.Fatal(err)
		}
	}
	targets, err := st.ProbeTargets(ctx, "", 10)
	if err != nil || len(targets) != 1 {
		t.Fatalf("targets %d, %v", len(targets), err)
	}
	fast.Store(targets[0].Sample.ProjectID) // the key's own check answers
	hang.Store(true)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	res := svc.Probe(cctx, targets[0], lifecycle.ProbeOptions{ProjectsPerCheck: 100, ProjectConcurrency: 8})
	if res.Status != store.StatusValid {
		t.Fatalf("check result %q, want valid", res.Status)
	}
	got, _ := st.GetExternalKey(ctx, org, ek.ID)
	if got.Status != store.StatusValid {
		t.Fatalf("key %q after projects timed out, want valid", got.Status)
	}
	denied, err := st.DeniedProjects(ctx, "", 1000)
	if err != nil || len(denied) != 0 {
		t.Fatalf("%d projects denied by a timeout (%v)", len(denied), err)
	}
	if cur, _ := st.ProjectProbeCursor(ctx, org, ek.ID); cur != "" {
		t.Fatalf("cursor moved to %q past projects not probed", cur)
	}
	// The KMS answers again: the next check probes them all.
	hang.Store(false)
	svc.Probe(ctx, targets[0], lifecycle.ProbeOptions{ProjectsPerCheck: 150})
	if cur, _ := st.ProjectProbeCursor(ctx, org, ek.ID); cur != "" {
		t.Fatalf("cursor %q after a complete cycle of one check", cur)
	}
}

func target(t *testing.T, st store.Store, id string) store.ProbeTarget {
	t.Helper()
	ts, err := st.ProbeTargets(context.Background(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		if x.Key.ID == id {
			return x
		}
	}
	t.Fatalf("no probe target for %s", id)
	return store.ProbeTarget{}
}

// L1: an outage seen by a replica that has not (yet) followed a
// revocation recorded by another does not overwrite the stored
// unavailable with degraded.
func TestOutageKeepsStoredRevocation(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	ek := r.key(t, kmsfake.Type)
	if _, err := r.a.CreateProject(ctx, "", r.org, "p", ek.ID); err != nil {
		t.Fatal(err)
	}
	syncB(t, r)
	tg := target(t, r.st, ek.ID) // read before the revocation, as a round would
	r.drv.Fail(kmsfake.ErrRevoked)
	if res := r.a.Probe(ctx, tg, lifecycle.ProbeOptions{}); res.Status != store.StatusUnavailable {
		t.Fatalf("revoked: %q", res.Status)
	}
	r.drv.Fail(kmsfake.ErrOutage)
	res := r.b.Probe(ctx, tg, lifecycle.ProbeOptions{}) // b has not applied the change
	if res.Status != store.StatusUnavailable {
		t.Fatalf("b's check: %q, want unavailable (the stored revocation stands)", res.Status)
	}
	got, _ := r.st.GetExternalKey(ctx, r.org, ek.ID)
	if got.Status != store.StatusUnavailable || got.StatusCode != kmsfake.ErrRevoked.Code {
		t.Fatalf("stored %q (%s) after an outage, want the revocation", got.Status, got.StatusCode)
	}
	evs, err := r.st.ListAudit(ctx, r.org, store.AuditFilter{Types: []string{"external_key.degraded"}})
	if err != nil || len(evs) != 0 {
		t.Fatalf("%d degraded events (%v)", len(evs), err)
	}
}

// L1: a replica whose gate a request closed keeps it closed while the
// store shows a valid status older than that revocation (its record
// failed or has not landed): it records the revocation again. A valid
// status recorded later opens it.
func TestFollowKeepsGateClosedOnStaleValid(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	ek := r.key(t, kmsfake.Type)
	p, err := r.a.CreateProject(ctx, "", r.org, "p", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	syncB(t, r)
	before := time.Now().Add(-time.Second)
	r.drv.Fail(kmsfake.ErrRevoked)
	var u *keyring.UnavailableError
	if _, err := r.b.Keyring().Key(ctx, r.org, p.ID, 1); !errors.As(err, &u) {
		t.Fatalf("request after the revocation: %v", err)
	}
	// The store lost b's record: it shows valid, from before.
	if err := r.st.SetExternalKeyHealth(ctx, r.org, ek.ID, store.KeyHealth{Status: store.StatusValid, At: before}); err != nil {
		t.Fatal(err)
	}
	stale, _ := r.st.GetExternalKey(ctx, r.org, ek.ID)
	r.b.Follow(ctx, stale)
	if r.b.Keyring().Unavailable(ek.ID) == nil {
		t.Fatal("a stale valid status reopened the gate")
	}
	if got, _ := r.st.GetExternalKey(ctx, r.org, ek.ID); got.Status != store.StatusUnavailable {
		t.Fatalf("stored %q, want the revocation recorded again", got.Status)
	}
	// Access is back and recorded later: the gate opens.
	r.drv.Fail(nil)
	if err := r.st.SetExternalKeyHealth(ctx, r.org, ek.ID, store.KeyHealth{Status: store.StatusValid, At: time.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	fresh, _ := r.st.GetExternalKey(ctx, r.org, ek.ID)
	r.b.Follow(ctx, fresh)
	if u := r.b.Keyring().Unavailable(ek.ID); u != nil {
		t.Fatalf("gate still closed after a later valid status: %v", u)
	}
}

// L1: a validation that succeeds but began before a revocation recorded
// meanwhile does not reopen the key or overwrite the revocation.
func TestValidateStaleSuccess(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.Project(t, &e.ek)
	release := e.Fake.Hold()
	defer release()
	before := e.Fake.Unwraps.Load()
	type result struct {
		v   lifecycle.Validation
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := e.Service.ValidateKey(ctx, "", e.Org, e.ek.ID)
		done <- result{v, err}
	}()
	// Wait for the validation's decrypt to be held.
	for e.Fake.Unwraps.Load() == before {
		runtime.Gosched()
	}
	// Meanwhile another replica records a revocation.
	e.Clock.Advance(time.Second)
	if err := e.Store.SetExternalKeyHealth(ctx, e.Org, e.ek.ID, store.KeyHealth{Status: store.StatusUnavailable, Code: "permission_denied", At: e.Clock.Now()}); err != nil {
		t.Fatal(err)
	}
	release()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.v.Status != store.StatusUnavailable {
		t.Fatalf("validation reports %q, want unavailable (revoked after it began)", res.v.Status)
	}
	if got, _ := e.Store.GetExternalKey(ctx, e.Org, e.ek.ID); got.Status != store.StatusUnavailable {
		t.Fatalf("stored %q: a stale success overwrote the revocation", got.Status)
	}
	if e.Keyring.Unavailable(e.ek.ID) == nil {
		t.Fatal("gate open after a stale success")
	}
	// A validation begun after the revocation restores it.
	e.Clock.Advance(time.Second)
	v, err := e.Service.ValidateKey(ctx, "", e.Org, e.ek.ID)
	if err != nil || v.Status != store.StatusValid || e.Keyring.Unavailable(e.ek.ID) != nil {
		t.Fatalf("fresh validation: %+v %v", v, err)
	}
}

// L2: a re-key clears a project's refusal and publishes
// project.access_restored; every replica's gate of the project opens
// (also on its old key, should it come back to it).
func TestRekeyClearsRefusal(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	r.drv.SetProjectScoped(true)
	ek, ek2 := r.key(t, kmsfake.Type), r.key(t, kmsfake.Type)
	p, err := r.a.CreateProject(ctx, "", r.org, "p", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	syncB(t, r)
	r.drv.DenyProject(p.ID)
	r.a.Keyring().EvictProject(p.ID)
	var u *keyring.UnavailableError
	if _, err := r.a.Keyring().Key(ctx, r.org, p.ID, 1); !errors.As(err, &u) || u.ProjectID != p.ID {
		t.Fatalf("refused project: %v", err)
	}
	syncB(t, r)
	if r.b.Keyring().ProjectUnavailable(ek.ID, p.ID) == nil {
		t.Fatal("b's gate of the refused project is open")
	}
	// The customer allows it again; a re-key (on a replica that has
	// forgotten its gate) moves it to another key.
	r.drv.AllowProject(p.ID)
	r.a.Keyring().ClearProjectGates()
	to := ek2.ID
	if _, err := r.a.UpdateProject(ctx, "", r.org, p.ID, lifecycle.ProjectUpdate{ExternalKeyID: &to}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.GetProjectAccess(ctx, r.org, p.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refusal kept after a re-key: %v", err)
	}
	chs, err := r.st.ChangesAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	restored := 0
	for _, c := range chs {
		if c.Kind == "project.access_restored" && c.ObjectID == p.ID {
			restored++
		}
	}
	if restored != 1 {
		t.Fatalf("%d project.access_restored changes for the re-key", restored)
	}
	// Back to the first key: b's gate of the project there opens.
	back := ek.ID
	if _, err := r.a.UpdateProject(ctx, "", r.org, p.ID, lifecycle.ProjectUpdate{ExternalKeyID: &back}); err != nil {
		t.Fatal(err)
	}
	syncB(t, r)
	if u := r.b.Keyring().ProjectUnavailable(ek.ID, p.ID); u != nil {
		t.Fatalf("b still refuses the project on its old key: %v", u)
	}
	cache(t, r.b, r.org, p.ID)
}

// L2: a project-scoped refusal of an id the store does not hold (a
// project being created) leaves no closed gate and no record.
func TestRefusalOfUnknownProjectLeavesNoGate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.Fake.SetProjectScoped(true)
	ghost := ids.New("proj_")
	e.Fake.DenyProject(ghost)
	if _, _, err := e.Service.NewVersion(ctx, e.Org, ghost, 1, &e.ek); err == nil {
		t.Fatal("wrap for a refused project succeeded")
	}
	if u := e.Keyring.ProjectUnavailable(e.ek.ID, ghost); u != nil {
		t.Fatalf("gate kept for an id the store does not know: %v", u)
	}
	if _, err := e.Store.GetProjectAccess(ctx, e.Org, ghost); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refusal recorded for an unknown project: %v", err)
	}
}

// M1: when the key's sample is the project the customer refuses alone, the
// key is judged by the org-level check: it stays valid, and only that
// project is denied.
func TestRefusedSampleProjectLeavesKeyValid(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.Fake.SetProjectScoped(true)
	pid, pk := e.Project(t, &e.ek)
	pk.Zero()
	e.Fake.DenyProject(pid)
	tg := target(t, e.Store, e.ek.ID)
	wraps := e.Fake.Wraps.Load()
	if res := e.Service.Probe(ctx, tg, lifecycle.ProbeOptions{}); res.Status != store.StatusValid {
		t.Fatalf("check %q, want valid", res.Status)
	}
	if e.Fake.Wraps.Load() == wraps {
		t.Fatal("no org-level encrypt after the sample's project was refused")
	}
	if got, _ := e.Store.GetExternalKey(ctx, e.Org, e.ek.ID); got.Status != store.StatusValid {
		t.Fatalf("key %q", got.Status)
	}
	if _, err := e.Store.GetProjectAccess(ctx, e.Org, pid); err != nil {
		t.Fatalf("the refused project is not denied: %v", err)
	}
}

// lateDriver is the fake KMS whose Unwrap, while armed, answers as the KMS
// judged at the call and hands the answer over only when released: an
// answer on its way while the customer changes something.
type lateDriver struct {
	*kmsfake.Driver
	armed            *atomic.Bool
	entered, release chan struct{}
}

func (d lateDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.Driver.Open(org, p)
	return lateProvider{inner, d}, err
}

type lateProvider struct {
	kms.Provider
	d lateDriver
}

func (p lateProvider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	pt, err := p.Provider.Unwrap(ctx, w, aad)
	if p.d.armed.CompareAndSwap(true, false) {
		p.d.entered <- struct{}{}
		<-p.d.release
	}
	return pt, err
}

// A check whose refusal was judged before the customer restored access,
// and arrives after another replica recorded the restoration, does not
// overwrite it: the stored status stays valid (one restored event), and
// the late replica's gate opens.
func TestLateRevocationYieldsToNewerRestore(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	ek := r.key(t, kmsfake.Type)
	if _, err := r.a.CreateProject(ctx, "", r.org, "p", ek.ID); err != nil {
		t.Fatal(err)
	}
	tg := target(t, r.st, ek.ID)
	r.drv.Fail(kmsfake.ErrRevoked)
	if res := r.a.Probe(ctx, tg, lifecycle.ProbeOptions{}); res.Status != store.StatusUnavailable {
		t.Fatalf("revoked: %q", res.Status)
	}
	late := lateDriver{Driver: r.drv, armed: &atomic.Bool{}, entered: make(chan struct{}), release: make(chan struct{})}
	late.armed.Store(true)
	b := lifecycle.New(lifecycle.Config{Store: r.st, Registry: kms.NewRegistry(late)})
	if err := b.Changes().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	tg = target(t, r.st, ek.ID)
	done := make(chan lifecycle.ProbeResult)
	go func() { done <- b.Probe(ctx, tg, lifecycle.ProbeOptions{}) }()
	<-late.entered                   // b's refusal is judged, not yet seen
	time.Sleep(2 * time.Millisecond) // stored times are milliseconds: a's check begins strictly later
	r.drv.Fail(nil)
	if res := r.a.Probe(ctx, tg, lifecycle.ProbeOptions{}); res.Status != store.StatusValid {
		t.Fatalf("restored: %q", res.Status)
	}
	close(late.release)
	<-done
	if got, _ := r.st.GetExternalKey(ctx, r.org, ek.ID); got.Status != store.StatusValid {
		t.Fatalf("stored %q after a late refusal, want the newer restoration", got.Status)
	}
	evs, err := r.st.ListAudit(ctx, r.org, store.AuditFilter{Types: []string{"external_key.restored"}})
	if err != nil || len(evs) != 1 {
		t.Fatalf("%d restored events (%v), want 1", len(evs), err)
	}
	if u := b.Keyring().Unavailable(ek.ID); u != nil {
		t.Fatalf("the late replica's gate stays closed: %v", u)
	}
}
