package lifecycle_test

import (
	"context"
	"errors"
	"path/filepath"
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

// twoReplicas is two lifecycle services (each with its own keyring and
// connection pool) on one database and one customer KMS.
type twoReplicas struct {
	a, b *lifecycle.Service
	st   store.Store
	drv  *kmsfake.Driver
	org  string
}

func newTwoReplicas(t *testing.T) *twoReplicas {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ekm.db")
	r := &twoReplicas{drv: kmsfake.New(), org: ids.New("org-")}
	root := secret.New()
	var svcs []*lifecycle.Service
	for range 3 {
		st, err := sqlstore.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		r.st = st
		svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(root), r.drv),
			Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}})
		if err := svc.Changes().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, svc)
	}
	r.a, r.b = svcs[0], svcs[1]
	if err := r.st.CreateOrg(ctx, store.Org{ID: r.org, Name: "o", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *twoReplicas) key(t *testing.T, typ string) store.ExternalKey {
	t.Helper()
	p, err := r.a.Check(typ, r.org, nil)
	if err != nil {
		t.Fatal(err)
	}
	ek := store.ExternalKey{ID: ids.New("extkey_"), OrgID: r.org, Type: typ, Name: "k", Purpose: "ekm", Params: p, Status: store.StatusValid, CreatedAt: time.Now()}
	if err := r.st.CreateExternalKey(context.Background(), ek); err != nil {
		t.Fatal(err)
	}
	return ek
}

// cache reads a project key through s, so that s caches it.
func cache(t *testing.T, s *lifecycle.Service, org, pid string) {
	t.Helper()
	k, err := s.Keyring().Key(context.Background(), org, pid, 1)
	if err != nil {
		t.Fatal(err)
	}
	k.Zero()
}

func syncB(t *testing.T, r *twoReplicas) {
	t.Helper()
	if err := r.b.Changes().Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// What one replica changes, the other applies from the change log:
// archived and re-keyed projects' cached keys are evicted, a validation's
// verdict moves the gate, a revocation seen by a request closes it, a
// removed key is forgotten. The changing replica has applied it when the
// call returns.
func TestChangesReachOtherReplica(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	ek := r.key(t, kmsfake.Type)

	// Archive.
	p1, err := r.a.CreateProject(ctx, "", r.org, "p1", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	cache(t, r.b, r.org, p1.ID)
	if _, err := r.a.ArchiveProject(ctx, "", r.org, p1.ID); err != nil {
		t.Fatal(err)
	}
	if r.a.Keyring().CachedKeys() != 0 {
		t.Fatal("the archiving replica still caches the project's key")
	}
	syncB(t, r)
	if n := r.b.Keyring().CachedKeys(); n != 0 {
		t.Fatalf("replica b caches %d keys of an archived project", n)
	}

	// Re-key.
	p2, err := r.a.CreateProject(ctx, "", r.org, "p2", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	cache(t, r.b, r.org, p2.ID)
	other := r.key(t, local.Type)
	if _, err := r.a.UpdateProject(ctx, "", r.org, p2.ID, lifecycle.ProjectUpdate{ExternalKeyID: &other.ID}); err != nil {
		t.Fatal(err)
	}
	syncB(t, r)
	if n := r.b.Keyring().CachedKeys(); n != 0 {
		t.Fatalf("replica b caches %d keys of a re-keyed project", n)
	}

	// Validation finds the key revoked: every gate closes; then valid
	// again: every gate opens.
	p3, err := r.a.CreateProject(ctx, "", r.org, "p3", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	cache(t, r.b, r.org, p3.ID)
	r.drv.Fail(kmsfake.ErrRevoked)
	if v, err := r.a.ValidateKey(ctx, "", r.org, ek.ID); err != nil || v.Valid {
		t.Fatalf("validate: %+v %v", v, err)
	}
	syncB(t, r)
	unwraps := r.drv.Unwraps.Load()
	var u *keyring.UnavailableError
	if _, err := r.b.Keyring().Key(ctx, r.org, p3.ID, 1); !errors.As(err, &u) || u.Class != kms.Revoked || u.Code != kmsfake.ErrRevoked.Code {
		t.Fatalf("replica b after the revocation: %v", err)
	}
	if r.drv.Unwraps.Load() != unwraps || r.b.Keyring().CachedKeys() != 0 {
		t.Fatal("replica b served or asked the KMS with its gate closed")
	}
	r.drv.Fail(nil)
	if v, err := r.a.ValidateKey(ctx, "", r.org, ek.ID); err != nil || !v.Valid {
		t.Fatalf("validate: %+v %v", v, err)
	}
	syncB(t, r)
	cache(t, r.b, r.org, p3.ID)

	// A request on replica a finds access withdrawn: b closes too.
	r.a.Keyring().EvictProject(p3.ID)
	r.drv.Fail(kmsfake.ErrRevoked)
	if _, err := r.a.Keyring().Key(ctx, r.org, p3.ID, 1); !errors.As(err, &u) {
		t.Fatalf("replica a: %v", err)
	}
	syncB(t, r)
	if r.b.Keyring().Unavailable(ek.ID) == nil || r.b.Keyring().CachedKeys() != 0 {
		t.Fatal("replica b did not close its gate after a's request saw the revocation")
	}
	r.drv.Fail(nil)

	// Removal: b forgets the key (its closed gate goes with it).
	unused := r.key(t, kmsfake.Type)
	r.drv.Fail(kmsfake.ErrRevoked)
	if v, err := r.a.ValidateKey(ctx, "", r.org, unused.ID); err != nil || v.Valid {
		t.Fatalf("validate: %+v %v", v, err)
	}
	r.drv.Fail(nil)
	syncB(t, r)
	if r.b.Keyring().Unavailable(unused.ID) == nil {
		t.Fatal("replica b's gate is open")
	}
	if _, err := r.a.RemoveKey(ctx, "", r.org, unused.ID); err != nil {
		t.Fatal(err)
	}
	syncB(t, r)
	if r.b.Keyring().Unavailable(unused.ID) != nil {
		t.Fatal("replica b still holds the removed key's gate")
	}
}

// flakyAccess is a replica's store whose next read of a project's access
// record fails (the database briefly unreachable).
type flakyAccess struct {
	store.Store
	fail atomic.Bool
}

func (f *flakyAccess) GetProjectAccess(ctx context.Context, orgID, projectID string) (store.ProjectAccess, error) {
	if f.fail.CompareAndSwap(true, false) {
		return store.ProjectAccess{}, errors.New("connection refused")
	}
	return f.Store.GetProjectAccess(ctx, orgID, projectID)
}

// A replica that applies a project's refusal while its read of the
// refusal fails still stops serving the project from its cache: the
// change evicts first, so the next use asks the customer's KMS, which
// refuses (the change is applied once and not read again).
func TestProjectRefusalEvictsEvenWhenItsReadFails(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	r.drv.SetProjectScoped(true)
	ek := r.key(t, kmsfake.Type)
	p, err := r.a.CreateProject(ctx, "", r.org, "p", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyAccess{Store: r.st}
	b := lifecycle.New(lifecycle.Config{Store: flaky, Registry: kms.NewRegistry(r.drv)})
	if err := b.Changes().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cache(t, b, r.org, p.ID)

	r.drv.DenyProject(p.ID)
	r.a.Keyring().EvictProject(p.ID)
	if _, err := r.a.Keyring().Key(ctx, r.org, p.ID, 1); err == nil {
		t.Fatal("a served a refused project")
	}
	flaky.fail.Store(true)
	if err := b.Changes().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if flaky.fail.Load() {
		t.Fatal("b did not read the refusal")
	}
	var u *keyring.UnavailableError
	if _, err := b.Keyring().Key(ctx, r.org, p.ID, 1); !errors.As(err, &u) || u.ProjectID != p.ID {
		t.Fatalf("b, whose read of the refusal failed, served the project: %v", err)
	}
}

// flakyKeyRead is a replica's store whose next read of an external key
// fails.
type flakyKeyRead struct {
	store.Store
	fail atomic.Bool
}

func (f *flakyKeyRead) GetExternalKey(ctx context.Context, orgID, id string) (store.ExternalKey, error) {
	if f.fail.CompareAndSwap(true, false) {
		return store.ExternalKey{}, errors.New("connection refused")
	}
	return f.Store.GetExternalKey(ctx, orgID, id)
}

// A replica that applies a key's revocation while its read of the key's
// health fails still stops serving the key's projects from its cache.
func TestKeyRevocationEvictsEvenWhenItsReadFails(t *testing.T) {
	r := newTwoReplicas(t)
	ctx := context.Background()
	ek := r.key(t, kmsfake.Type)
	p, err := r.a.CreateProject(ctx, "", r.org, "p", ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyKeyRead{Store: r.st}
	b := lifecycle.New(lifecycle.Config{Store: flaky, Registry: kms.NewRegistry(r.drv)})
	if err := b.Changes().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cache(t, b, r.org, p.ID)

	r.drv.Fail(kmsfake.ErrRevoked)
	if v, err := r.a.ValidateKey(ctx, "", r.org, ek.ID); err != nil || v.Valid {
		t.Fatalf("validation of a revoked key: %+v, %v", v, err)
	}
	flaky.fail.Store(true)
	if err := b.Changes().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if flaky.fail.Load() {
		t.Fatal("b did not read the key's health")
	}
	if _, err := b.Keyring().Key(ctx, r.org, p.ID, 1); err == nil {
		t.Fatal("b, whose read of the revocation failed, served the project from its cache")
	}
}
