package lifecycle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/lifecycle/lifecycletest"
	"github.com/ekm-dev/ekm/store"
)

type env struct {
	*lifecycletest.Env
	ek store.ExternalKey
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{Env: lifecycletest.New(t, lifecycletest.Options{})}
	e.ek = e.ExternalKey(t, kmsfake.Type)
	return e
}

func TestRewrapAndRotate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid, v1 := e.Project(t, &e.ek)
	v, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, lifecycle.RotateOptions{})
	if err != nil || v != 2 {
		t.Fatalf("rotate = %d, %v", v, err)
	}
	cur, k2, err := e.Keyring.Current(ctx, e.Org, pid)
	if err != nil || cur != 2 || bytes.Equal(k2.Bytes(), v1.Bytes()) {
		t.Fatalf("after rotate current = %d, %v", cur, err)
	}
	to := e.ExternalKey(t, local.Type)
	recs, err := e.Service.Rewrap(ctx, e.Org, pid, &to)
	if err != nil || len(recs) != 2 {
		t.Fatalf("rewrap: %d, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.ExternalKeyID != to.ID {
			t.Fatalf("rewrapped record names %q", r.ExternalKeyID)
		}
	}
	// Failure leaves nothing half-done: Rewrap returns records, it stores none.
	e.Fake.Fail(kmsfake.ErrOutage)
	e.Keyring.EvictProject(pid)
	if _, err := e.Service.Rewrap(ctx, e.Org, pid, &to); err == nil {
		t.Fatal("rewrap succeeded while the source KMS is down")
	}
	keys, _ := e.Store.ListProjectKeys(ctx, e.Org, pid)
	for _, k := range keys {
		if k.ExternalKeyID != e.ek.ID {
			t.Fatal("rewrap wrote to the store")
		}
	}
}

func TestValidate(t *testing.T) {
	e := newEnv(t)
	key, err := e.Keyring.KMS(&e.ek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := key.Validate(context.Background(), kms.AAD{OrgID: e.Org}); err != nil {
		t.Fatal(err)
	}
	e.Fake.Fail(kmsfake.ErrRevoked)
	if _, err := key.Validate(context.Background(), kms.AAD{OrgID: e.Org}); kms.ClassOf(err) != kms.Revoked {
		t.Fatalf("Validate = %v", err)
	}
	evs, err := e.Store.ListAudit(context.Background(), e.Org, store.AuditFilter{Types: []string{"kms.call"}, Limit: 10})
	if err != nil || len(evs) != 2 {
		t.Fatalf("kms.call audit events = %d, %v", len(evs), err)
	}
}

// One recorded KMS operation that makes several requests (a validation:
// read, encrypt, decrypt, read) names every request id in its kms.call
// event, so each request can be found in the KMS's own logs.
func TestCallRecordsEveryRequestID(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	key, err := e.Keyring.KMS(&e.ek)
	if err != nil {
		t.Fatal(err)
	}
	err = key.Do(ctx, "validate", func(ctx context.Context, p kms.Provider) error {
		ci := kms.CallInfoFrom(ctx)
		ci.Record("req-1")
		ci.Record("req-2")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := e.Store.ListAudit(ctx, e.Org, store.AuditFilter{Types: []string{"kms.call"}, Limit: 10})
	if err != nil || len(evs) != 1 {
		t.Fatalf("kms.call events = %d, %v", len(evs), err)
	}
	var ev audit.KMSCall
	if err := json.Unmarshal(evs[0].Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.RequestID != "req-2" || len(ev.RequestIDs) != 2 || ev.RequestIDs[0] != "req-1" || ev.RequestIDs[1] != "req-2" {
		t.Fatalf("kms.call event = %+v", ev)
	}
}

// A kms.call event names the ekm request that caused the call, even when
// the caller is gone by the time it is written (a cache miss on a request
// path, a project creation).
func TestCallEventNamesEKMRequest(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(httpx.WithRequestID(context.Background(), "req_0123abcd"))
	p, err := e.Service.CreateProject(ctx, "key_admin", e.Org, "p", e.ek.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.Keyring.EvictProject(p.ID)
	cancel()
	// The leader of an unwrap finishes it even if its caller is gone (others
	// may be waiting), and the call is recorded.
	if k, err := e.Keyring.Key(ctx, e.Org, p.ID, 1); err == nil {
		k.Zero()
	}
	evs := e.Events(t, audit.TypeKMSCall)
	if len(evs) != 2 {
		t.Fatalf("%d kms.call events, want wrap and unwrap", len(evs))
	}
	for _, ev := range evs {
		var c audit.KMSCall
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatal(err)
		}
		if c.EKMRequestID != "req_0123abcd" || c.ExternalKeyID != e.ek.ID {
			t.Fatalf("kms.call %s", ev.Data)
		}
	}
	created := e.Events(t, audit.TypeProjectCreated)
	if len(created) != 1 || created[0].Actor != "key_admin" || created[0].ProjectID != p.ID {
		t.Fatalf("project.created %+v", created)
	}
}

// A scheduled rotation of a project another replica rotated first (the
// caller's Expect is stale) costs no KMS call: the project is read again
// before anything is wrapped.
func TestRotateStaleExpectMakesNoKMSCall(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid, _ := e.Project(t, &e.ek)
	stale, err := e.Store.GetProject(ctx, e.Org, pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, lifecycle.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	wraps := e.Fake.Wraps.Load()
	_, err = e.Service.RotateProjectKey(ctx, "", e.Org, pid, lifecycle.RotateOptions{Scheduled: true, Expect: &stale})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale rotation: %v, want ErrConflict", err)
	}
	if n := e.Fake.Wraps.Load() - wraps; n != 0 {
		t.Fatalf("%d KMS wraps for a rotation that could not be stored", n)
	}
}

// Keys of one org never wrap another org's project keys.
func TestKeysStayInTheirOrg(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	other := e.ek
	other.OrgID = "org-someoneelse"
	if _, _, err := e.Service.NewVersion(ctx, e.Org, "proj_x", 1, &other); err == nil {
		t.Fatal("a key of another org wrapped a project key")
	}
	pid, _ := e.Project(t, &e.ek)
	if _, err := e.Service.Rewrap(ctx, e.Org, pid, &other); err == nil {
		t.Fatal("a project was rewrapped under a key of another org")
	}
}

// Wraps made before a driver changed how it binds associated data (another
// algorithm label) are rewrapped in the background like wraps of an old KEK
// version, until none is left.
func TestRewrapMovesOldAlgorithmLabels(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.Fake.Relabel("fake-old")
	pid, _ := e.Project(t, &e.ek)
	e.Fake.Relabel("")
	rec, err := e.Store.GetProjectKey(ctx, e.Org, pid, 1)
	if err != nil || rec.Algorithm != "fake-old" {
		t.Fatalf("fixture: %+v %v", rec, err)
	}
	if n := e.Service.RewrapRotated(ctx, e.ek, rec.KEKVersion, 10); n != 1 {
		t.Fatalf("rewrapped %d", n)
	}
	rec, _ = e.Store.GetProjectKey(ctx, e.Org, pid, 1)
	if rec.Algorithm != local.Algorithm {
		t.Fatalf("label after rewrap %q", rec.Algorithm)
	}
	e.Keyring.EvictProject(pid)
	if _, err := e.Keyring.Key(ctx, e.Org, pid, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.Service.RewrapRotated(ctx, e.ek, rec.KEKVersion, 10); n != 0 {
		t.Fatalf("second pass rewrapped %d", n)
	}
	if len(e.Events(t, audit.TypeExternalKeyRewrapped)) != 1 {
		t.Fatal("rewrap not audited")
	}
}

// Validation proves the key still opens what it protects, not only that it
// works for new data: a stored project key it cannot unwrap (here
// corrupted; in AWS, an alias re-pointed to another key) makes it invalid.
func TestValidateReadsStoredKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid, _ := e.Project(t, &e.ek)
	if v, err := e.Service.ValidateKey(ctx, "", e.Org, e.ek.ID); err != nil || !v.Valid {
		t.Fatalf("validate: %+v %v", v, err)
	}
	rec, err := e.Store.GetProjectKey(ctx, e.Org, pid, 1)
	if err != nil {
		t.Fatal(err)
	}
	rec.Wrapped[len(rec.Wrapped)-1] ^= 1
	if err := e.Store.PutProjectKey(ctx, rec); err != nil {
		t.Fatal(err)
	}
	v, err := e.Service.ValidateKey(ctx, "", e.Org, e.ek.ID)
	if err != nil || v.Valid || v.Diagnosis.Code != "invalid_ciphertext" {
		t.Fatalf("validate with an unreadable stored key: %+v %v", v, err)
	}
	var n int
	for _, ev := range e.Events(t, audit.TypeKMSCall) {
		var c audit.KMSCall
		_ = json.Unmarshal(ev.Data, &c)
		if c.Operation == "validate_decrypt" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d validate_decrypt calls recorded, want 2", n)
	}
}
