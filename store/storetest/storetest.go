// Package storetest is the conformance suite every store.Store backend
// passes. A backend's test calls Run with a function that opens a fresh,
// empty store.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

// Run runs the suite. open must return a new, empty store each call, close
// it when t ends (t.Cleanup), and be safe to call from parallel subtests.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Orgs", testOrgs},
		{"APIKeys", testAPIKeys},
		{"APIKeyLastUsed", testAPIKeyLastUsed},
		{"ServiceAccounts", testServiceAccounts},
		{"ExternalKeys", testExternalKeys},
		{"Projects", testProjects},
		{"ProjectKeys", testProjectKeys},
		{"OrgSettings", testOrgSettings},
		{"ProbeTargets", testProbeTargets},
		{"ProjectSamples", testProjectSamples},
		{"ProjectProbeBatch", testProjectProbeBatch},
		{"ProjectAccess", testProjectAccess},
		{"ProjectKeysToRewrap", testProjectKeysToRewrap},
		{"ProjectsDueForRotation", testProjectsDueForRotation},
		{"Files", testFiles},
		{"Audit", testAudit},
		{"PruneAudit", testPruneAudit},
		{"Pagination", testPagination},
		{"TenantIsolation", testTenantIsolation},
		{"TimesRoundTrip", testTimes},
		{"TxAtomicity", testTxAtomicity},
		{"TxConcurrentIncrements", testTxConcurrentIncrements},
		{"Changes", testChanges},
		{"ChangesCommitOrder", testChangesCommitOrder},
		{"Leases", testLeases},
		{"LeasesOnDBClock", testLeasesOnDBClock},
		{"DeploymentID", testDeploymentID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// --- helpers ---

// now is the current time at millisecond precision, what stores keep.
func now() time.Time { return time.UnixMilli(time.Now().UnixMilli()).UTC() }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want %v", what, err, target)
	}
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func get[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func hash(s string) []byte {
	// Any 32 bytes do; the store treats the hash as opaque.
	h := make([]byte, 32)
	copy(h, s)
	return h
}

func newOrg(t *testing.T, s store.Queries) store.Org {
	t.Helper()
	o := store.Org{ID: ids.New("org-"), Name: "acme", CreatedAt: now()}
	must(t, s.CreateOrg(context.Background(), o))
	return o
}

func newExternalKey(t *testing.T, s store.Queries, orgID string) store.ExternalKey {
	t.Helper()
	k := store.ExternalKey{
		ID: ids.New("extkey_"), OrgID: orgID, Type: "local", Name: "main", Purpose: "ekm",
		Params:            map[string]string{"key_version": "v1", "vault_url": "https://x.vault.azure.net"},
		Status:            store.StatusValid,
		StatusAt:          now(),
		CurrentKEKVersion: "v1",
		CreatedAt:         now(),
	}
	must(t, s.CreateExternalKey(context.Background(), k))
	return k
}

func newProject(t *testing.T, s store.Queries, orgID, extKeyID string) store.Project {
	t.Helper()
	p := store.Project{ID: ids.New("proj_"), OrgID: orgID, Name: "p", ExternalKeyID: extKeyID, CreatedAt: now(), CurrentKeyVersion: 1}
	must(t, s.CreateProject(context.Background(), p))
	return p
}

func newProjectKey(t *testing.T, s store.Queries, p store.Project, version int, kekVersion string) store.ProjectKey {
	t.Helper()
	k := store.ProjectKey{
		OrgID: p.OrgID, ProjectID: p.ID, Version: version, ExternalKeyID: p.ExternalKeyID,
		KEKVersion: kekVersion, Algorithm: "RSA-OAEP-256", Wrapped: []byte(fmt.Sprintf("wrapped-%d-%s", version, kekVersion)), CreatedAt: now(),
	}
	must(t, s.PutProjectKey(context.Background(), k))
	return k
}

func newServiceAccount(t *testing.T, s store.Queries, p store.Project) store.ServiceAccount {
	t.Helper()
	sa := store.ServiceAccount{ID: ids.New("svc_acct_"), OrgID: p.OrgID, ProjectID: p.ID, Name: "bot", Role: "member", CreatedAt: now()}
	must(t, s.CreateServiceAccount(context.Background(), sa))
	return sa
}

func newProjectAPIKey(t *testing.T, s store.Queries, sa store.ServiceAccount) store.APIKey {
	t.Helper()
	id := ids.New("key_")
	k := store.APIKey{ID: id, OrgID: sa.OrgID, Kind: store.KindProject, ProjectID: sa.ProjectID, ServiceAccountID: sa.ID,
		Name: "proj key", Hash: hash(id), RedactedValue: "sk-proj-abc…xyz", CreatedAt: now()}
	must(t, s.CreateAPIKey(context.Background(), k))
	return k
}

func newAdminAPIKey(t *testing.T, s store.Queries, orgID string) store.APIKey {
	t.Helper()
	id := ids.New("key_")
	k := store.APIKey{ID: id, OrgID: orgID, Kind: store.KindAdmin, Name: "admin", Hash: hash(id), RedactedValue: "sk-admin-abc…xyz", CreatedAt: now()}
	must(t, s.CreateAPIKey(context.Background(), k))
	return k
}

func newFile(t *testing.T, s store.Queries, p store.Project, purpose string) store.File {
	t.Helper()
	id := ids.New("file-")
	f := store.File{ID: id, OrgID: p.OrgID, ProjectID: p.ID, Purpose: purpose, Bytes: 1234, CreatedAt: now(),
		KeyVersion: 1, NameCiphertext: []byte("enc:" + id), BlobKey: "blobs/" + id}
	must(t, s.CreateFile(context.Background(), f))
	return f
}

func newAudit(t *testing.T, s store.Queries, orgID, typ, projectID string, at time.Time) store.AuditEvent {
	t.Helper()
	e := store.AuditEvent{ID: ids.New("audit_log-"), OrgID: orgID, Type: typ, EffectiveAt: at, Actor: "key_x",
		ProjectID: projectID, Data: json.RawMessage(`{"id":"` + projectID + `"}`)}
	must(t, s.AppendAudit(context.Background(), e))
	return e
}

func idsOf[T any](xs []T, id func(T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, id(x))
	}
	return out
}

// --- tests ---

func testOrgs(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	equal(t, "GetOrg", get[store.Org](t, "GetOrg")(s.GetOrg(ctx, o.ID)), o)
	wantErr(t, "duplicate org", s.CreateOrg(ctx, o), store.ErrConflict)
	_, err := s.GetOrg(ctx, ids.New("org-"))
	wantErr(t, "missing org", err, store.ErrNotFound)

	o2 := newOrg(t, s)
	all := get[[]store.Org](t, "ListOrgs")(s.ListOrgs(ctx, store.Page{}))
	equal(t, "ListOrgs", all, []store.Org{o, o2})
	equal(t, "ListOrgs after", get[[]store.Org](t, "ListOrgs")(s.ListOrgs(ctx, store.Page{After: o.ID, Limit: 5})), []store.Org{o2})
}

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	p := newProject(t, s, o.ID, "")
	sa := newServiceAccount(t, s, p)
	admin := newAdminAPIKey(t, s, o.ID)
	proj := newProjectAPIKey(t, s, sa)

	equal(t, "GetAPIKey admin", get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o.ID, admin.ID)), admin)
	equal(t, "GetAPIKey project", get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o.ID, proj.ID)), proj)
	equal(t, "APIKeyByHash", get[store.APIKey](t, "APIKeyByHash")(s.APIKeyByHash(ctx, proj.Hash)), proj)
	_, err := s.APIKeyByHash(ctx, hash("nope"))
	wantErr(t, "APIKeyByHash unknown", err, store.ErrNotFound)

	equal(t, "ListAPIKeys admin", get[[]store.APIKey](t, "list")(s.ListAPIKeys(ctx, o.ID, store.KindAdmin, store.Page{})), []store.APIKey{admin})
	equal(t, "ListAPIKeys project", get[[]store.APIKey](t, "list")(s.ListAPIKeys(ctx, o.ID, store.KindProject, store.Page{})), []store.APIKey{proj})
	equal(t, "ListAPIKeys all", get[[]store.APIKey](t, "list")(s.ListAPIKeys(ctx, o.ID, "", store.Page{})), []store.APIKey{admin, proj})

	dupID := admin
	dupID.Hash = hash("other")
	wantErr(t, "duplicate id", s.CreateAPIKey(ctx, dupID), store.ErrConflict)
	dupHash := admin
	dupHash.ID = ids.New("key_")
	wantErr(t, "duplicate hash", s.CreateAPIKey(ctx, dupHash), store.ErrConflict)

	must(t, s.DeleteAPIKey(ctx, o.ID, admin.ID))
	_, err = s.GetAPIKey(ctx, o.ID, admin.ID)
	wantErr(t, "get deleted", err, store.ErrNotFound)
	_, err = s.APIKeyByHash(ctx, admin.Hash)
	wantErr(t, "hash of deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeleteAPIKey(ctx, o.ID, admin.ID), store.ErrNotFound)

	// A key of a missing org or project is refused.
	orphan := store.APIKey{ID: ids.New("key_"), OrgID: ids.New("org-"), Kind: store.KindAdmin, Hash: hash("orphan"), CreatedAt: now()}
	wantErr(t, "key of missing org", s.CreateAPIKey(ctx, orphan), store.ErrNotFound)
}

// testAPIKeyLastUsed: TouchAPIKeys sets last use in one statement for keys
// of any org, only ever forward, ignoring unknown ids; every read returns
// it.
func testAPIKeyLastUsed(t *testing.T, s store.Store) {
	ctx := context.Background()
	o1, o2 := newOrg(t, s), newOrg(t, s)
	a := newAdminAPIKey(t, s, o1.ID)
	sa := newServiceAccount(t, s, newProject(t, s, o2.ID, ""))
	p := newProjectAPIKey(t, s, sa)
	if !a.LastUsedAt.IsZero() || !get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o1.ID, a.ID)).LastUsedAt.IsZero() {
		t.Fatal("a new key has a last use")
	}
	t1 := now().Truncate(time.Minute)
	must(t, s.TouchAPIKeys(ctx, t1, []string{a.ID, p.ID, ids.New("key_")}))
	a.LastUsedAt, p.LastUsedAt = t1, t1
	equal(t, "GetAPIKey", get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o1.ID, a.ID)), a)
	equal(t, "APIKeyByHash", get[store.APIKey](t, "APIKeyByHash")(s.APIKeyByHash(ctx, p.Hash)), p)
	equal(t, "ListAPIKeys", get[[]store.APIKey](t, "list")(s.ListAPIKeys(ctx, o2.ID, store.KindProject, store.Page{})), []store.APIKey{p})

	// An older flush (another replica's, late) does not move it back.
	must(t, s.TouchAPIKeys(ctx, t1.Add(-time.Minute), []string{a.ID}))
	equal(t, "after an older touch", get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o1.ID, a.ID)).LastUsedAt, t1)
	t2 := t1.Add(time.Minute)
	must(t, s.TouchAPIKeys(ctx, t2, []string{a.ID}))
	equal(t, "after a newer touch", get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o1.ID, a.ID)).LastUsedAt, t2)
	equal(t, "untouched key", get[store.APIKey](t, "GetAPIKey")(s.GetAPIKey(ctx, o2.ID, p.ID)).LastUsedAt, t1)
	must(t, s.TouchAPIKeys(ctx, t2, nil))

	// A batch of 500 in one statement.
	batch := []string{}
	for range 500 {
		batch = append(batch, newAdminAPIKey(t, s, o1.ID).ID)
	}
	must(t, s.TouchAPIKeys(ctx, t2, batch))
	for _, k := range get[[]store.APIKey](t, "list")(s.ListAPIKeys(ctx, o1.ID, store.KindAdmin, store.Page{})) {
		if !k.LastUsedAt.Equal(t2) {
			t.Fatalf("key %s of the batch: last used %v, want %v", k.ID, k.LastUsedAt, t2)
		}
	}
}

func testServiceAccounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	p1 := newProject(t, s, o.ID, "")
	p2 := newProject(t, s, o.ID, "")
	sa1 := newServiceAccount(t, s, p1)
	sa2 := newServiceAccount(t, s, p1)
	other := newServiceAccount(t, s, p2)
	k1 := newProjectAPIKey(t, s, sa1)
	k2 := newProjectAPIKey(t, s, sa2)

	equal(t, "get", get[store.ServiceAccount](t, "get")(s.GetServiceAccount(ctx, o.ID, p1.ID, sa1.ID)), sa1)
	_, err := s.GetServiceAccount(ctx, o.ID, p2.ID, sa1.ID)
	wantErr(t, "get under another project", err, store.ErrNotFound)
	equal(t, "list p1", get[[]store.ServiceAccount](t, "list")(s.ListServiceAccounts(ctx, o.ID, p1.ID, store.Page{})), []store.ServiceAccount{sa1, sa2})
	equal(t, "list p2", get[[]store.ServiceAccount](t, "list")(s.ListServiceAccounts(ctx, o.ID, p2.ID, store.Page{})), []store.ServiceAccount{other})
	wantErr(t, "duplicate", s.CreateServiceAccount(ctx, sa1), store.ErrConflict)
	missing := sa1
	missing.ID, missing.ProjectID = ids.New("svc_acct_"), ids.New("proj_")
	wantErr(t, "account of missing project", s.CreateServiceAccount(ctx, missing), store.ErrNotFound)

	renamed := sa1
	renamed.Name = "renamed"
	must(t, s.UpdateServiceAccount(ctx, renamed))
	equal(t, "updated", get[store.ServiceAccount](t, "get")(s.GetServiceAccount(ctx, o.ID, p1.ID, sa1.ID)), renamed)
	elsewhere := renamed
	elsewhere.ProjectID = p2.ID
	wantErr(t, "update under another project", s.UpdateServiceAccount(ctx, elsewhere), store.ErrNotFound)
	elsewhere = renamed
	elsewhere.OrgID = ids.New("org-")
	wantErr(t, "update in another org", s.UpdateServiceAccount(ctx, elsewhere), store.ErrNotFound)

	wantErr(t, "delete under another project", s.DeleteServiceAccount(ctx, o.ID, p2.ID, sa1.ID), store.ErrNotFound)
	must(t, s.DeleteServiceAccount(ctx, o.ID, p1.ID, sa1.ID))
	_, err = s.GetServiceAccount(ctx, o.ID, p1.ID, sa1.ID)
	wantErr(t, "get deleted", err, store.ErrNotFound)
	// Its API key went with it; the other account's did not.
	_, err = s.GetAPIKey(ctx, o.ID, k1.ID)
	wantErr(t, "key of deleted account", err, store.ErrNotFound)
	_, err = s.APIKeyByHash(ctx, k1.Hash)
	wantErr(t, "hash of deleted account's key", err, store.ErrNotFound)
	equal(t, "other account's key", get[store.APIKey](t, "get")(s.GetAPIKey(ctx, o.ID, k2.ID)), k2)
	wantErr(t, "delete again", s.DeleteServiceAccount(ctx, o.ID, p1.ID, sa1.ID), store.ErrNotFound)
}

func testExternalKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	k := newExternalKey(t, s, o.ID)
	equal(t, "get", get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, o.ID, k.ID)), k)
	wantErr(t, "duplicate", s.CreateExternalKey(ctx, k), store.ErrConflict)
	_, err := s.GetExternalKey(ctx, o.ID, ids.New("extkey_"))
	wantErr(t, "missing", err, store.ErrNotFound)

	other := k
	other.ID, other.Purpose, other.Params = ids.New("extkey_"), "other", map[string]string{}
	must(t, s.CreateExternalKey(ctx, other))
	equal(t, "list all", get[[]store.ExternalKey](t, "list")(s.ListExternalKeys(ctx, o.ID, "", store.Page{})), []store.ExternalKey{k, other})
	equal(t, "list ekm", get[[]store.ExternalKey](t, "list")(s.ListExternalKeys(ctx, o.ID, "ekm", store.Page{})), []store.ExternalKey{k})

	// Health: a failure keeps the KEK version when the update has none.
	at := now().Add(time.Minute)
	must(t, s.SetExternalKeyHealth(ctx, o.ID, k.ID, store.KeyHealth{Status: store.StatusUnavailable, Code: "key_disabled", Message: "the key is disabled", At: at}))
	k.Status, k.StatusCode, k.StatusMessage, k.StatusAt = store.StatusUnavailable, "key_disabled", "the key is disabled", at
	equal(t, "after failure", get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, o.ID, k.ID)), k)
	at = at.Add(time.Minute)
	must(t, s.SetExternalKeyHealth(ctx, o.ID, k.ID, store.KeyHealth{Status: store.StatusValid, At: at, CurrentKEKVersion: "v2"}))
	k.Status, k.StatusCode, k.StatusMessage, k.StatusAt, k.CurrentKEKVersion = store.StatusValid, "", "", at, "v2"
	equal(t, "after recovery", get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, o.ID, k.ID)), k)
	wantErr(t, "health of missing", s.SetExternalKeyHealth(ctx, o.ID, ids.New("extkey_"), store.KeyHealth{Status: store.StatusValid, At: at}), store.ErrNotFound)

	params := map[string]string{"key_version": "v2"}
	must(t, s.UpdateExternalKeyParams(ctx, o.ID, k.ID, params))
	k.Params = params
	equal(t, "after params", get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, o.ID, k.ID)), k)
	wantErr(t, "params of missing", s.UpdateExternalKeyParams(ctx, o.ID, ids.New("extkey_"), params), store.ErrNotFound)

	// A key still wrapping project keys cannot be deleted.
	p := newProject(t, s, o.ID, k.ID)
	newProjectKey(t, s, p, 1, "v2")
	wantErr(t, "delete in use", s.DeleteExternalKey(ctx, o.ID, k.ID), store.ErrConflict)
	equal(t, "still there", get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, o.ID, k.ID)), k)

	must(t, s.DeleteExternalKey(ctx, o.ID, other.ID))
	_, err = s.GetExternalKey(ctx, o.ID, other.ID)
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeleteExternalKey(ctx, o.ID, other.ID), store.ErrNotFound)
	missingOrg := other
	missingOrg.ID, missingOrg.OrgID = ids.New("extkey_"), ids.New("org-")
	wantErr(t, "key of missing org", s.CreateExternalKey(ctx, missingOrg), store.ErrNotFound)
}

func testProjects(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	k := newExternalKey(t, s, o.ID)
	p1 := newProject(t, s, o.ID, "")
	p2 := newProject(t, s, o.ID, k.ID)
	p3 := newProject(t, s, o.ID, k.ID)

	equal(t, "get default-key project", get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p1.ID)), p1)
	equal(t, "get", get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p2.ID)), p2)
	wantErr(t, "duplicate", s.CreateProject(ctx, p1), store.ErrConflict)
	_, err := s.GetProject(ctx, o.ID, ids.New("proj_"))
	wantErr(t, "missing", err, store.ErrNotFound)
	bad := p1
	bad.ID, bad.ExternalKeyID = ids.New("proj_"), ids.New("extkey_")
	wantErr(t, "project on missing key", s.CreateProject(ctx, bad), store.ErrNotFound)

	archived := now()
	p3.ArchivedAt = &archived
	p3.Name = "renamed"
	p3.CurrentKeyVersion = 7
	must(t, s.UpdateProject(ctx, p3))
	equal(t, "after update", get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p3.ID)), p3)

	equal(t, "list active", idsOf(get[[]store.Project](t, "list")(s.ListProjects(ctx, o.ID, false, store.Page{})), pid), []string{p1.ID, p2.ID})
	equal(t, "list all", get[[]store.Project](t, "list")(s.ListProjects(ctx, o.ID, true, store.Page{})), []store.Project{p1, p2, p3})

	equal(t, "by key", get[[]string](t, "by key")(s.ProjectIDsByExternalKey(ctx, o.ID, k.ID, false)), []string{p2.ID})
	equal(t, "by key incl. archived", get[[]string](t, "by key")(s.ProjectIDsByExternalKey(ctx, o.ID, k.ID, true)), []string{p2.ID, p3.ID})
	equal(t, "by default key", get[[]string](t, "by key")(s.ProjectIDsByExternalKey(ctx, o.ID, "", true)), []string{p1.ID})

	// Moving a project to the default key and back; unarchiving.
	p2.ExternalKeyID = ""
	p3.ArchivedAt = nil
	must(t, s.UpdateProject(ctx, p2))
	must(t, s.UpdateProject(ctx, p3))
	equal(t, "moved", get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p2.ID)), p2)
	equal(t, "unarchived", get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p3.ID)), p3)
	p2.ExternalKeyID = ids.New("extkey_")
	wantErr(t, "update to missing key", s.UpdateProject(ctx, p2), store.ErrNotFound)

	missing := p1
	missing.ID = ids.New("proj_")
	wantErr(t, "update missing", s.UpdateProject(ctx, missing), store.ErrNotFound)
}

func pid(p store.Project) string { return p.ID }

func testProjectKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	k := newExternalKey(t, s, o.ID)
	p := newProject(t, s, o.ID, k.ID)
	v1 := newProjectKey(t, s, p, 1, "kv1")
	v2 := newProjectKey(t, s, p, 2, "kv1")
	v3 := newProjectKey(t, s, p, 3, "kv2")

	equal(t, "get", get[store.ProjectKey](t, "get")(s.GetProjectKey(ctx, o.ID, p.ID, 2)), v2)
	_, err := s.GetProjectKey(ctx, o.ID, p.ID, 4)
	wantErr(t, "missing version", err, store.ErrNotFound)
	equal(t, "list", get[[]store.ProjectKey](t, "list")(s.ListProjectKeys(ctx, o.ID, p.ID)), []store.ProjectKey{v1, v2, v3})
	equal(t, "count", get[map[string]int](t, "count")(s.CountProjectKeysByKEKVersion(ctx, o.ID, k.ID)), map[string]int{"kv1": 2, "kv2": 1})

	// Rewrap replaces the wrapping of a version but keeps its creation time.
	re := v1
	re.KEKVersion, re.Wrapped, re.Algorithm, re.CreatedAt = "kv2", []byte("rewrapped"), "RSA-OAEP", now().Add(time.Hour)
	must(t, s.PutProjectKey(ctx, re))
	re.CreatedAt = v1.CreatedAt
	equal(t, "rewrapped", get[store.ProjectKey](t, "get")(s.GetProjectKey(ctx, o.ID, p.ID, 1)), re)
	equal(t, "count after rewrap", get[map[string]int](t, "count")(s.CountProjectKeysByKEKVersion(ctx, o.ID, k.ID)), map[string]int{"kv1": 1, "kv2": 2})

	// Rewrap onto another external key (key migration).
	k2 := newExternalKey(t, s, o.ID)
	moved := v2
	moved.ExternalKeyID, moved.KEKVersion = k2.ID, "k2v1"
	must(t, s.PutProjectKey(ctx, moved))
	equal(t, "count old key", get[map[string]int](t, "count")(s.CountProjectKeysByKEKVersion(ctx, o.ID, k.ID)), map[string]int{"kv2": 2})
	equal(t, "count new key", get[map[string]int](t, "count")(s.CountProjectKeysByKEKVersion(ctx, o.ID, k2.ID)), map[string]int{"k2v1": 1})
	equal(t, "count unused key", get[map[string]int](t, "count")(s.CountProjectKeysByKEKVersion(ctx, o.ID, ids.New("extkey_"))), map[string]int{})

	// Keys on the operator default.
	pd := newProject(t, s, o.ID, "")
	d1 := newProjectKey(t, s, pd, 1, "default-v1")
	equal(t, "get default", get[store.ProjectKey](t, "get")(s.GetProjectKey(ctx, o.ID, pd.ID, 1)), d1)
	equal(t, "count default", get[map[string]int](t, "count")(s.CountProjectKeysByKEKVersion(ctx, o.ID, "")), map[string]int{"default-v1": 1})

	orphan := v1
	orphan.ProjectID = ids.New("proj_")
	wantErr(t, "key of missing project", s.PutProjectKey(ctx, orphan), store.ErrNotFound)
	wrongKey := v1
	wrongKey.Version, wrongKey.ExternalKeyID = 9, ids.New("extkey_")
	wantErr(t, "key under missing external key", s.PutProjectKey(ctx, wrongKey), store.ErrNotFound)
}

func testProbeTargets(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := newOrg(t, s), newOrg(t, s)
	used := newExternalKey(t, s, a.ID)
	usedB := newExternalKey(t, s, b.ID)
	archivedOnly := newExternalKey(t, s, a.ID)
	newExternalKey(t, s, a.ID) // registered, no project keys
	movedAway := newExternalKey(t, s, b.ID)

	p := newProject(t, s, a.ID, used.ID)
	newProjectKey(t, s, p, 1, "v1")
	newProjectKey(t, s, p, 2, "v1") // two versions: still listed once
	pb := newProject(t, s, b.ID, usedB.ID)
	newProjectKey(t, s, pb, 1, "v1")
	pa := newProject(t, s, a.ID, archivedOnly.ID)
	newProjectKey(t, s, pa, 1, "v1")
	at := now()
	pa.ArchivedAt = &at
	must(t, s.UpdateProject(ctx, pa))
	pd := newProject(t, s, a.ID, "") // operator default: no row to list
	newProjectKey(t, s, pd, 1, "v1")
	// Project points to movedAway but every version was rewrapped elsewhere.
	pm := newProject(t, s, b.ID, movedAway.ID)
	km := newProjectKey(t, s, pm, 1, "v1")
	km.ExternalKeyID = usedB.ID
	must(t, s.PutProjectKey(ctx, km))

	got := get[[]store.ProbeTarget](t, "in use")(s.ProbeTargets(ctx, "", 100))
	want := map[string]store.ExternalKey{used.ID: used, usedB.ID: usedB}
	tid := func(pt store.ProbeTarget) string { return pt.Key.ID }
	if len(got) != len(want) {
		t.Fatalf("ProbeTargets = %v, want %v", idsOf(got, tid), []string{used.ID, usedB.ID})
	}
	for i, pt := range got {
		equal(t, "in use "+pt.Key.ID, pt.Key, want[pt.Key.ID])
		if i > 0 && got[i-1].Key.ID >= pt.Key.ID {
			t.Fatalf("ProbeTargets not in id order: %v", idsOf(got, tid))
		}
		// The sample is a key it wraps, of a project that is not archived.
		if pt.Sample.ExternalKeyID != pt.Key.ID || pt.Sample.ProjectID == pa.ID || len(pt.Sample.Wrapped) == 0 {
			t.Fatalf("sample of %s: %+v", pt.Key.ID, pt.Sample)
		}
		if pt.Key.ID == used.ID && pt.Sample.Version != 2 {
			t.Fatalf("sample of %s is version %d, want the newest (2)", used.ID, pt.Sample.Version)
		}
	}
	// Paged: one at a time, in order, after the previous id.
	first := get[[]store.ProbeTarget](t, "page 1")(s.ProbeTargets(ctx, "", 1))
	second := get[[]store.ProbeTarget](t, "page 2")(s.ProbeTargets(ctx, first[0].Key.ID, 1))
	third := get[[]store.ProbeTarget](t, "page 3")(s.ProbeTargets(ctx, second[0].Key.ID, 1))
	equal(t, "pages", []string{first[0].Key.ID, second[0].Key.ID}, idsOf(got, tid))
	equal(t, "past the end", len(third), 0)
}

func testOrgSettings(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, other := newOrg(t, s), newOrg(t, s)
	got := get[store.OrgSettings](t, "default settings")(s.GetOrgSettings(ctx, o.ID))
	equal(t, "defaults", got, store.OrgSettings{OrgID: o.ID})
	wantErr(t, "settings of a missing org", func() error { _, err := s.GetOrgSettings(ctx, "org-missing"); return err }(), store.ErrNotFound)

	k := newExternalKey(t, s, o.ID)
	set := store.OrgSettings{OrgID: o.ID, DefaultExternalKeyID: k.ID, EKMRequired: true, UpdatedAt: now()}
	must(t, s.PutOrgSettings(ctx, set))
	equal(t, "stored", get[store.OrgSettings](t, "settings")(s.GetOrgSettings(ctx, o.ID)), set)
	set.EKMRequired, set.DefaultExternalKeyID = false, ""
	must(t, s.PutOrgSettings(ctx, set))
	equal(t, "updated", get[store.OrgSettings](t, "settings")(s.GetOrgSettings(ctx, o.ID)), set)

	// Tenant isolation: a key of another org cannot be an org's default.
	wantErr(t, "other org's key", s.PutOrgSettings(ctx, store.OrgSettings{OrgID: other.ID, DefaultExternalKeyID: k.ID, UpdatedAt: now()}), store.ErrNotFound)
	equal(t, "other org untouched", get[store.OrgSettings](t, "settings")(s.GetOrgSettings(ctx, other.ID)), store.OrgSettings{OrgID: other.ID})

	// The default key cannot be deleted while it is the default.
	must(t, s.PutOrgSettings(ctx, store.OrgSettings{OrgID: o.ID, DefaultExternalKeyID: k.ID, UpdatedAt: now()}))
	wantErr(t, "delete default key", s.DeleteExternalKey(ctx, o.ID, k.ID), store.ErrConflict)

	// Orgs to migrate: required, with a default, with a project on the
	// operator's key (archived ones count).
	must(t, s.PutOrgSettings(ctx, store.OrgSettings{OrgID: o.ID, DefaultExternalKeyID: k.ID, EKMRequired: true, UpdatedAt: now()}))
	equal(t, "nothing to migrate", len(get[[]store.OrgSettings](t, "migrate")(s.OrgsToMigrate(ctx, "", 10))), 0)
	p := newProject(t, s, o.ID, "")
	at := now()
	p.ArchivedAt = &at
	must(t, s.UpdateProject(ctx, p))
	todo := get[[]store.OrgSettings](t, "migrate")(s.OrgsToMigrate(ctx, "", 10))
	if len(todo) != 1 || todo[0].OrgID != o.ID || todo[0].DefaultExternalKeyID != k.ID {
		t.Fatalf("OrgsToMigrate = %+v", todo)
	}
	equal(t, "after", len(get[[]store.OrgSettings](t, "migrate")(s.OrgsToMigrate(ctx, o.ID, 10))), 0)
	p.ExternalKeyID = k.ID
	must(t, s.UpdateProject(ctx, p))
	equal(t, "migrated", len(get[[]store.OrgSettings](t, "migrate")(s.OrgsToMigrate(ctx, "", 10))), 0)
}

func testProjectSamples(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, other := newOrg(t, s), newOrg(t, s)
	k, k2 := newExternalKey(t, s, o.ID), newExternalKey(t, s, o.ID)
	p1, p2, p3 := newProject(t, s, o.ID, k.ID), newProject(t, s, o.ID, k.ID), newProject(t, s, o.ID, k.ID)
	newProjectKey(t, s, p1, 1, "v1")
	newProjectKey(t, s, p1, 2, "v1")
	newProjectKey(t, s, p2, 1, "v1")
	newProjectKey(t, s, p3, 1, "v1")
	at := now()
	p3.ArchivedAt = &at
	must(t, s.UpdateProject(ctx, p3))
	newProjectKey(t, s, newProject(t, s, o.ID, k2.ID), 1, "v1")
	got := get[[]store.ProjectKey](t, "samples")(s.ProjectSamples(ctx, o.ID, k.ID, 10))
	want := map[string]int{p1.ID: 2, p2.ID: 1}
	if len(got) != 2 {
		t.Fatalf("samples %+v", got)
	}
	for i, pk := range got {
		if want[pk.ProjectID] != pk.Version || (i > 0 && got[i-1].ProjectID >= pk.ProjectID) {
			t.Fatalf("samples %+v, want the newest version of each active project in order", got)
		}
	}
	equal(t, "limit", len(get[[]store.ProjectKey](t, "samples")(s.ProjectSamples(ctx, o.ID, k.ID, 1))), 1)
	equal(t, "other org", len(get[[]store.ProjectKey](t, "samples")(s.ProjectSamples(ctx, other.ID, k.ID, 10))), 0)
}

func testProjectAccess(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, other := newOrg(t, s), newOrg(t, s)
	k := newExternalKey(t, s, o.ID)
	p, p2 := newProject(t, s, o.ID, k.ID), newProject(t, s, o.ID, k.ID)
	wantErr(t, "not denied", func() error { _, err := s.GetProjectAccess(ctx, o.ID, p.ID); return err }(), store.ErrNotFound)
	a := store.ProjectAccess{OrgID: o.ID, ProjectID: p.ID, ExternalKeyID: k.ID, Code: "c", Message: "m", At: now()}
	must(t, s.DenyProject(ctx, a))
	equal(t, "denied", get[store.ProjectAccess](t, "access")(s.GetProjectAccess(ctx, o.ID, p.ID)), a)
	a.Code = "c2"
	must(t, s.DenyProject(ctx, a))
	equal(t, "replaced", get[store.ProjectAccess](t, "access")(s.GetProjectAccess(ctx, o.ID, p.ID)).Code, "c2")
	wantErr(t, "other org's view", func() error { _, err := s.GetProjectAccess(ctx, other.ID, p.ID); return err }(), store.ErrNotFound)
	wantErr(t, "key of another org", s.DenyProject(ctx, store.ProjectAccess{OrgID: other.ID, ProjectID: p2.ID, ExternalKeyID: k.ID, At: now()}), store.ErrNotFound)
	must(t, s.DenyProject(ctx, store.ProjectAccess{OrgID: o.ID, ProjectID: p2.ID, ExternalKeyID: k.ID, At: now()}))
	all := get[[]store.ProjectAccess](t, "denied")(s.DeniedProjects(ctx, "", 10))
	mine := 0
	for _, d := range all {
		if d.OrgID == o.ID {
			mine++
		}
	}
	equal(t, "denied listed", mine, 2)
	equal(t, "allowed", get[bool](t, "allow")(s.AllowProject(ctx, o.ID, p.ID)), true)
	equal(t, "allowed twice", get[bool](t, "allow")(s.AllowProject(ctx, o.ID, p.ID)), false)
	wantErr(t, "no longer denied", func() error { _, err := s.GetProjectAccess(ctx, o.ID, p.ID); return err }(), store.ErrNotFound)
}

func testProjectKeysToRewrap(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, other := newOrg(t, s), newOrg(t, s)
	k, k2 := newExternalKey(t, s, o.ID), newExternalKey(t, s, o.ID)
	p1, p2 := newProject(t, s, o.ID, k.ID), newProject(t, s, o.ID, k.ID)
	a1 := newProjectKey(t, s, p1, 1, "v1")
	newProjectKey(t, s, p1, 2, "v2") // already current
	a2 := newProjectKey(t, s, p1, 3, "v0")
	b1 := newProjectKey(t, s, p2, 1, "v1")
	at := now()
	p2.ArchivedAt = &at // archived projects' data still needs its keys rewrapped
	must(t, s.UpdateProject(ctx, p2))
	newProjectKey(t, s, newProject(t, s, o.ID, k2.ID), 1, "v1") // other key
	newProjectKey(t, s, newProject(t, s, other.ID, ""), 1, "v1")

	key := func(pk store.ProjectKey) string { return fmt.Sprintf("%s/%d", pk.ProjectID, pk.Version) }
	want := []string{key(a1), key(a2), key(b1)}
	if p2.ID < p1.ID {
		want = []string{key(b1), key(a1), key(a2)}
	}
	equal(t, "to rewrap", idsOf(get[[]store.ProjectKey](t, "rewrap")(s.ProjectKeysToRewrap(ctx, o.ID, k.ID, "v2", "", 10)), key), want)
	equal(t, "limited", idsOf(get[[]store.ProjectKey](t, "rewrap")(s.ProjectKeysToRewrap(ctx, o.ID, k.ID, "v2", "", 2)), key), want[:2])
	equal(t, "other org", len(get[[]store.ProjectKey](t, "rewrap")(s.ProjectKeysToRewrap(ctx, other.ID, k.ID, "v2", "", 10))), 0)
	// With an algorithm: also versions on the current KEK version whose
	// label differs (every fixture is labelled RSA-OAEP-256).
	all := get[[]store.ProjectKey](t, "rewrap")(s.ProjectKeysToRewrap(ctx, o.ID, k.ID, "v2", "RSA-OAEP-256+x", 10))
	equal(t, "with algorithm", len(all), 4)
	equal(t, "same algorithm", len(get[[]store.ProjectKey](t, "rewrap")(s.ProjectKeysToRewrap(ctx, o.ID, k.ID, "v2", "RSA-OAEP-256", 10))), 3)
}

func testProjectsDueForRotation(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, o2 := newOrg(t, s), newOrg(t, s)
	k := newExternalKey(t, s, o.ID)
	old := time.UnixMilli(1_700_000_000_000).UTC()
	put := func(p store.Project, version int, created time.Time) {
		must(t, s.PutProjectKey(ctx, store.ProjectKey{OrgID: p.OrgID, ProjectID: p.ID, Version: version, ExternalKeyID: p.ExternalKeyID,
			KEKVersion: "v1", Algorithm: "A256GCM", Wrapped: []byte("w"), CreatedAt: created}))
	}
	due1 := newProject(t, s, o.ID, k.ID)
	put(due1, 1, old)
	due2 := newProject(t, s, o2.ID, "") // default key, other org: due too
	put(due2, 1, old)
	fresh := newProject(t, s, o.ID, k.ID)
	put(fresh, 1, old.Add(time.Hour))
	rotated := newProject(t, s, o.ID, k.ID) // old version 1, but current is 2 and fresh
	put(rotated, 1, old)
	put(rotated, 2, old.Add(time.Hour))
	rotated.CurrentKeyVersion = 2
	must(t, s.UpdateProject(ctx, rotated))
	archived := newProject(t, s, o.ID, k.ID)
	put(archived, 1, old)
	at := now()
	archived.ArchivedAt = &at
	must(t, s.UpdateProject(ctx, archived))

	cutoff := old.Add(time.Minute)
	want := []string{due1.ID, due2.ID}
	slices.Sort(want)
	equal(t, "due", idsOf(get[[]store.Project](t, "due")(s.ProjectsDueForRotation(ctx, cutoff, "", 10)), pid), want)
	equal(t, "page", idsOf(get[[]store.Project](t, "due")(s.ProjectsDueForRotation(ctx, cutoff, want[0], 10)), pid), want[1:])
	equal(t, "limit", idsOf(get[[]store.Project](t, "due")(s.ProjectsDueForRotation(ctx, cutoff, "", 1)), pid), want[:1])
	equal(t, "exactly at cutoff", len(get[[]store.Project](t, "due")(s.ProjectsDueForRotation(ctx, old, "", 10))), 2)
}

func testFiles(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	p := newProject(t, s, o.ID, "")
	p2 := newProject(t, s, o.ID, "")
	f1 := newFile(t, s, p, "assistants")
	f2 := newFile(t, s, p, "batch")
	f3 := newFile(t, s, p2, "assistants")

	equal(t, "get", get[store.File](t, "get")(s.GetFile(ctx, o.ID, p.ID, f1.ID)), f1)
	_, err := s.GetFile(ctx, o.ID, p2.ID, f1.ID)
	wantErr(t, "get under another project", err, store.ErrNotFound)
	equal(t, "list", get[[]store.File](t, "list")(s.ListFiles(ctx, o.ID, p.ID, "", store.Page{})), []store.File{f1, f2})
	equal(t, "list purpose", get[[]store.File](t, "list")(s.ListFiles(ctx, o.ID, p.ID, "batch", store.Page{})), []store.File{f2})
	equal(t, "list p2", get[[]store.File](t, "list")(s.ListFiles(ctx, o.ID, p2.ID, "", store.Page{})), []store.File{f3})
	wantErr(t, "duplicate", s.CreateFile(ctx, f1), store.ErrConflict)
	orphan := f1
	orphan.ID, orphan.ProjectID = ids.New("file-"), ids.New("proj_")
	wantErr(t, "file of missing project", s.CreateFile(ctx, orphan), store.ErrNotFound)

	wantErr(t, "delete under another project", s.DeleteFile(ctx, o.ID, p2.ID, f1.ID), store.ErrNotFound)
	must(t, s.DeleteFile(ctx, o.ID, p.ID, f1.ID))
	_, err = s.GetFile(ctx, o.ID, p.ID, f1.ID)
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeleteFile(ctx, o.ID, p.ID, f1.ID), store.ErrNotFound)

	// Re-encryption: list and swap content by compare-and-set.
	below := get[[]store.File](t, "below")(s.FilesBelowKeyVersion(ctx, o.ID, p.ID, f2.KeyVersion+1, "", 10))
	equal(t, "below current+1", below, []store.File{f2})
	equal(t, "below current", get[[]store.File](t, "below")(s.FilesBelowKeyVersion(ctx, o.ID, p.ID, f2.KeyVersion, "", 10)), []store.File{})
	equal(t, "below after cursor", get[[]store.File](t, "below")(s.FilesBelowKeyVersion(ctx, o.ID, p.ID, f2.KeyVersion+1, f2.ID, 10)), []store.File{})
	equal(t, "count below", get[int](t, "count")(s.CountFilesBelowKeyVersion(ctx, o.ID, p.ID, f2.KeyVersion+1)), 1)
	equal(t, "count below other org", get[int](t, "count")(s.CountFilesBelowKeyVersion(ctx, ids.New("org-"), p.ID, f2.KeyVersion+1)), 0)
	nf := f2
	nf.KeyVersion, nf.NameCiphertext, nf.BlobKey = f2.KeyVersion+1, []byte("new name ct"), "blob-new"
	wantErr(t, "replace with stale blob key", s.ReplaceFileContent(ctx, nf, "not-the-blob"), store.ErrConflict)
	must(t, s.ReplaceFileContent(ctx, nf, f2.BlobKey))
	equal(t, "replaced", get[store.File](t, "get")(s.GetFile(ctx, o.ID, p.ID, f2.ID)), nf)
	wantErr(t, "replace again (stale)", s.ReplaceFileContent(ctx, nf, f2.BlobKey), store.ErrConflict)
	other := nf
	other.OrgID = ids.New("org-")
	wantErr(t, "replace in another org", s.ReplaceFileContent(ctx, other, nf.BlobKey), store.ErrNotFound)
}

func aid(e store.AuditEvent) string { return e.ID }

func testAudit(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, other := newOrg(t, s), newOrg(t, s)
	base := time.Unix(1_700_000_000, 0).UTC()
	sec := func(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }
	// Ids are in creation order; effective times are not, on purpose.
	e1 := newAudit(t, s, o.ID, "project.created", "proj_a", sec(10))
	e2 := newAudit(t, s, o.ID, "project.updated", "proj_a", sec(10.5))
	e3 := newAudit(t, s, o.ID, "project.created", "proj_b", sec(12))
	e4 := newAudit(t, s, o.ID, "api_key.created", "", sec(11))
	e5 := newAudit(t, s, o.ID, "project.archived", "proj_b", sec(13.999))
	newAudit(t, s, other.ID, "project.created", "proj_a", sec(10))
	all := []store.AuditEvent{e5, e4, e3, e2, e1}

	list := func(f store.AuditFilter) []string {
		t.Helper()
		return idsOf(get[[]store.AuditEvent](t, "ListAudit")(s.ListAudit(ctx, o.ID, f)), aid)
	}
	ptr := func(t time.Time) *time.Time { return &t }
	equal(t, "all, newest first", get[[]store.AuditEvent](t, "ListAudit")(s.ListAudit(ctx, o.ID, store.AuditFilter{})), all)
	equal(t, "limit", list(store.AuditFilter{Limit: 2}), []string{e5.ID, e4.ID})
	equal(t, "after", list(store.AuditFilter{After: e4.ID, Limit: 2}), []string{e3.ID, e2.ID})
	equal(t, "after, no limit", list(store.AuditFilter{After: e2.ID}), []string{e1.ID})
	equal(t, "after last", list(store.AuditFilter{After: e1.ID}), []string{})
	equal(t, "before: previous page", list(store.AuditFilter{Before: e2.ID, Limit: 2}), []string{e4.ID, e3.ID})
	equal(t, "before, no limit", list(store.AuditFilter{Before: e3.ID}), []string{e5.ID, e4.ID})
	equal(t, "after and before", list(store.AuditFilter{After: e5.ID, Before: e2.ID}), []string{e4.ID, e3.ID})
	equal(t, "types", list(store.AuditFilter{Types: []string{"project.created", "project.archived"}}), []string{e5.ID, e3.ID, e1.ID})
	equal(t, "projects", list(store.AuditFilter{ProjectIDs: []string{"proj_a"}}), []string{e2.ID, e1.ID})
	equal(t, "types and projects", list(store.AuditFilter{Types: []string{"project.created"}, ProjectIDs: []string{"proj_b", "proj_x"}}), []string{e3.ID})
	// Time bounds compare whole seconds: 10.5 is in second 10.
	equal(t, "gt", list(store.AuditFilter{GT: ptr(sec(10))}), []string{e5.ID, e4.ID, e3.ID})
	equal(t, "gt fractional bound", list(store.AuditFilter{GT: ptr(sec(10.7))}), []string{e5.ID, e4.ID, e3.ID})
	equal(t, "gte", list(store.AuditFilter{GTE: ptr(sec(10))}), []string{e5.ID, e4.ID, e3.ID, e2.ID, e1.ID})
	equal(t, "gte 11", list(store.AuditFilter{GTE: ptr(sec(11))}), []string{e5.ID, e4.ID, e3.ID})
	equal(t, "lt", list(store.AuditFilter{LT: ptr(sec(11))}), []string{e2.ID, e1.ID})
	equal(t, "lte", list(store.AuditFilter{LTE: ptr(sec(11))}), []string{e4.ID, e2.ID, e1.ID})
	equal(t, "lte 13", list(store.AuditFilter{LTE: ptr(sec(13))}), []string{e5.ID, e4.ID, e3.ID, e2.ID, e1.ID})
	equal(t, "gte and lte", list(store.AuditFilter{GTE: ptr(sec(11)), LTE: ptr(sec(12))}), []string{e4.ID, e3.ID})
	equal(t, "everything", list(store.AuditFilter{Types: []string{"project.created"}, GT: ptr(sec(9)), LT: ptr(sec(13)), After: e5.ID, Limit: 1}), []string{e3.ID})
	equal(t, "no match", list(store.AuditFilter{Types: []string{"nope"}}), []string{})

	bad := e1
	bad.ID, bad.Data = ids.New("audit_log-"), json.RawMessage(`{"x":`)
	if err := s.AppendAudit(ctx, bad); err == nil {
		t.Fatal("AppendAudit accepted invalid JSON data")
	}
	wantErr(t, "duplicate", s.AppendAudit(ctx, e1), store.ErrConflict)
	empty := store.AuditEvent{ID: ids.New("audit_log-"), OrgID: o.ID, Type: "org.updated", EffectiveAt: sec(20)}
	must(t, s.AppendAudit(ctx, empty))
	equal(t, "no data", get[[]store.AuditEvent](t, "ListAudit")(s.ListAudit(ctx, o.ID, store.AuditFilter{Limit: 1})), []store.AuditEvent{empty})
}

func testPruneAudit(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := newOrg(t, s), newOrg(t, s)
	base := time.Unix(1_700_000_000, 0).UTC()
	oldA := newAudit(t, s, a.ID, "x", "", base.Add(-time.Millisecond))
	newAudit(t, s, b.ID, "x", "", base.Add(-time.Hour))
	edge := newAudit(t, s, a.ID, "x", "", base)
	keepB := newAudit(t, s, b.ID, "x", "", base.Add(time.Hour))

	n, err := s.PruneAudit(ctx, base)
	must(t, err)
	if n != 2 {
		t.Fatalf("PruneAudit deleted %d events, want 2", n)
	}
	equal(t, "org a", idsOf(get[[]store.AuditEvent](t, "list")(s.ListAudit(ctx, a.ID, store.AuditFilter{})), aid), []string{edge.ID})
	equal(t, "org b", idsOf(get[[]store.AuditEvent](t, "list")(s.ListAudit(ctx, b.ID, store.AuditFilter{})), aid), []string{keepB.ID})
	_ = oldA
	n, err = s.PruneAudit(ctx, base)
	must(t, err)
	if n != 0 {
		t.Fatalf("second PruneAudit deleted %d events, want 0", n)
	}
}

// checkPaging checks a list method against the ids it should return, in
// creation order.
func checkPaging[T any](t *testing.T, name string, want []string, list func(store.Page) ([]T, error), id func(T) string) {
	t.Helper()
	if len(want) != 5 {
		t.Fatalf("%s: checkPaging wants 5 items", name)
	}
	rev := []string{want[4], want[3], want[2], want[1], want[0]}
	cases := []struct {
		p    store.Page
		want []string
	}{
		{store.Page{}, want},
		{store.Page{Limit: 2}, want[:2]},
		{store.Page{After: want[1], Limit: 2}, want[2:4]},
		{store.Page{After: want[3], Limit: 2}, want[4:]},
		{store.Page{After: want[4], Limit: 2}, []string{}},
		{store.Page{After: want[0]}, want[1:]},
		{store.Page{Desc: true}, rev},
		{store.Page{Desc: true, Limit: 3}, rev[:3]},
		{store.Page{Desc: true, After: want[3], Limit: 2}, []string{want[2], want[1]}},
		{store.Page{Desc: true, After: want[0]}, []string{}},
	}
	for _, c := range cases {
		got, err := list(c.p)
		if err != nil {
			t.Fatalf("%s %+v: %v", name, c.p, err)
		}
		equal(t, fmt.Sprintf("%s %+v", name, c.p), idsOf(got, id), c.want)
	}
}

func testPagination(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	var projects, apiKeys, extKeys, accounts, files []string
	p := newProject(t, s, o.ID, "")
	sa := newServiceAccount(t, s, p)
	accounts = append(accounts, sa.ID)
	for range 5 {
		projects = append(projects, newProject(t, s, o.ID, "").ID)
		apiKeys = append(apiKeys, newAdminAPIKey(t, s, o.ID).ID)
		extKeys = append(extKeys, newExternalKey(t, s, o.ID).ID)
		files = append(files, newFile(t, s, p, "assistants").ID)
	}
	for range 4 {
		accounts = append(accounts, newServiceAccount(t, s, p).ID)
	}
	newProjectAPIKey(t, s, sa) // another kind: not in the admin list
	newFile(t, s, p, "batch")  // another purpose
	// The first project is archived: not in the list of five.
	at := now()
	p.ArchivedAt = &at
	must(t, s.UpdateProject(ctx, p))
	checkPaging(t, "ListProjects", projects, func(pg store.Page) ([]store.Project, error) {
		return s.ListProjects(ctx, o.ID, false, pg)
	}, pid)
	checkPaging(t, "ListAPIKeys", apiKeys, func(pg store.Page) ([]store.APIKey, error) {
		return s.ListAPIKeys(ctx, o.ID, store.KindAdmin, pg)
	}, func(k store.APIKey) string { return k.ID })
	checkPaging(t, "ListExternalKeys", extKeys, func(pg store.Page) ([]store.ExternalKey, error) {
		return s.ListExternalKeys(ctx, o.ID, "ekm", pg)
	}, func(k store.ExternalKey) string { return k.ID })
	checkPaging(t, "ListServiceAccounts", accounts, func(pg store.Page) ([]store.ServiceAccount, error) {
		return s.ListServiceAccounts(ctx, o.ID, p.ID, pg)
	}, func(a store.ServiceAccount) string { return a.ID })
	checkPaging(t, "ListFiles", files, func(pg store.Page) ([]store.File, error) {
		return s.ListFiles(ctx, o.ID, p.ID, "assistants", pg)
	}, func(f store.File) string { return f.ID })
}

// testTenantIsolation builds one org's objects and checks that every method
// taking an org id, given another org's id, neither sees nor changes them.
func testTenantIsolation(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := newOrg(t, s), newOrg(t, s)
	k := newExternalKey(t, s, a.ID)
	p := newProject(t, s, a.ID, k.ID)
	pk := newProjectKey(t, s, p, 1, "v1")
	sa := newServiceAccount(t, s, p)
	apiKey := newProjectAPIKey(t, s, sa)
	admin := newAdminAPIKey(t, s, a.ID)
	f := newFile(t, s, p, "assistants")
	ev := newAudit(t, s, a.ID, "project.created", p.ID, now())
	// Org b has objects of its own, so empty answers are not vacuous.
	kb := newExternalKey(t, s, b.ID)
	pb := newProject(t, s, b.ID, kb.ID)
	newProjectKey(t, s, pb, 1, "v1")
	newAdminAPIKey(t, s, b.ID)
	newAudit(t, s, b.ID, "project.created", pb.ID, now())

	nf := func(what string, err error) { t.Helper(); wantErr(t, what, err, store.ErrNotFound) }
	_, err := s.GetAPIKey(ctx, b.ID, admin.ID)
	nf("GetAPIKey", err)
	_, err = s.GetServiceAccount(ctx, b.ID, p.ID, sa.ID)
	nf("GetServiceAccount", err)
	_, err = s.GetExternalKey(ctx, b.ID, k.ID)
	nf("GetExternalKey", err)
	_, err = s.GetProject(ctx, b.ID, p.ID)
	nf("GetProject", err)
	_, err = s.GetProjectKey(ctx, b.ID, p.ID, 1)
	nf("GetProjectKey", err)
	_, err = s.GetFile(ctx, b.ID, p.ID, f.ID)
	nf("GetFile", err)

	empty := func(what string, n int, err error) {
		t.Helper()
		must(t, err)
		if n != 0 {
			t.Fatalf("%s with another org's id returned %d items", what, n)
		}
	}
	keys, err := s.ListAPIKeys(ctx, b.ID, store.KindProject, store.Page{})
	empty("ListAPIKeys", len(keys), err)
	accts, err := s.ListServiceAccounts(ctx, b.ID, p.ID, store.Page{})
	empty("ListServiceAccounts", len(accts), err)
	pids, err := s.ProjectIDsByExternalKey(ctx, b.ID, k.ID, true)
	empty("ProjectIDsByExternalKey", len(pids), err)
	pks, err := s.ListProjectKeys(ctx, b.ID, p.ID)
	empty("ListProjectKeys", len(pks), err)
	counts, err := s.CountProjectKeysByKEKVersion(ctx, b.ID, k.ID)
	empty("CountProjectKeysByKEKVersion", len(counts), err)
	files, err := s.ListFiles(ctx, b.ID, p.ID, "", store.Page{})
	empty("ListFiles", len(files), err)
	evs, err := s.ListAudit(ctx, b.ID, store.AuditFilter{ProjectIDs: []string{p.ID}})
	empty("ListAudit", len(evs), err)
	for _, x := range get[[]store.ExternalKey](t, "list")(s.ListExternalKeys(ctx, b.ID, "", store.Page{})) {
		if x.OrgID != b.ID {
			t.Fatalf("ListExternalKeys(b) returned %s of org %s", x.ID, x.OrgID)
		}
	}
	for _, x := range get[[]store.Project](t, "list")(s.ListProjects(ctx, b.ID, true, store.Page{})) {
		if x.OrgID != b.ID {
			t.Fatalf("ListProjects(b) returned %s of org %s", x.ID, x.OrgID)
		}
	}
	for _, x := range get[[]store.AuditEvent](t, "list")(s.ListAudit(ctx, b.ID, store.AuditFilter{})) {
		if x.OrgID != b.ID {
			t.Fatalf("ListAudit(b) returned %s of org %s", x.ID, x.OrgID)
		}
	}

	// Writes through the wrong org fail and change nothing.
	nf("DeleteAPIKey", s.DeleteAPIKey(ctx, b.ID, admin.ID))
	nf("DeleteServiceAccount", s.DeleteServiceAccount(ctx, b.ID, p.ID, sa.ID))
	nf("DeleteFile", s.DeleteFile(ctx, b.ID, p.ID, f.ID))
	nf("DeleteExternalKey", s.DeleteExternalKey(ctx, b.ID, k.ID))
	nf("SetExternalKeyHealth", s.SetExternalKeyHealth(ctx, b.ID, k.ID, store.KeyHealth{Status: store.StatusUnavailable, At: now()}))
	nf("UpdateExternalKeyParams", s.UpdateExternalKeyParams(ctx, b.ID, k.ID, map[string]string{"x": "y"}))
	moved := p
	moved.OrgID, moved.Name = b.ID, "stolen"
	nf("UpdateProject", s.UpdateProject(ctx, moved))
	// Nor can org b point its objects at org a's.
	pb.ExternalKeyID = k.ID
	nf("UpdateProject onto another org's key", s.UpdateProject(ctx, pb))
	nf("CreateProject on another org's key", s.CreateProject(ctx, store.Project{ID: ids.New("proj_"), OrgID: b.ID, ExternalKeyID: k.ID, CreatedAt: now()}))
	stolen := pk
	stolen.OrgID = b.ID
	nf("PutProjectKey into another org's project", s.PutProjectKey(ctx, stolen))
	nf("CreateFile in another org's project", s.CreateFile(ctx, store.File{ID: ids.New("file-"), OrgID: b.ID, ProjectID: p.ID, NameCiphertext: []byte("x"), CreatedAt: now()}))
	nf("CreateServiceAccount in another org's project", s.CreateServiceAccount(ctx, store.ServiceAccount{ID: ids.New("svc_acct_"), OrgID: b.ID, ProjectID: p.ID, CreatedAt: now()}))
	nf("CreateAPIKey in another org's project", s.CreateAPIKey(ctx, store.APIKey{ID: ids.New("key_"), OrgID: b.ID, Kind: store.KindProject, ProjectID: p.ID, Hash: hash("x"), CreatedAt: now()}))

	equal(t, "api key intact", get[store.APIKey](t, "get")(s.GetAPIKey(ctx, a.ID, admin.ID)), admin)
	equal(t, "project api key intact", get[store.APIKey](t, "get")(s.GetAPIKey(ctx, a.ID, apiKey.ID)), apiKey)
	equal(t, "service account intact", get[store.ServiceAccount](t, "get")(s.GetServiceAccount(ctx, a.ID, p.ID, sa.ID)), sa)
	equal(t, "file intact", get[store.File](t, "get")(s.GetFile(ctx, a.ID, p.ID, f.ID)), f)
	equal(t, "external key intact", get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, a.ID, k.ID)), k)
	equal(t, "project intact", get[store.Project](t, "get")(s.GetProject(ctx, a.ID, p.ID)), p)
	equal(t, "project key intact", get[store.ProjectKey](t, "get")(s.GetProjectKey(ctx, a.ID, p.ID, 1)), pk)
	equal(t, "audit intact", get[[]store.AuditEvent](t, "list")(s.ListAudit(ctx, a.ID, store.AuditFilter{})), []store.AuditEvent{ev})
}

func testTimes(t *testing.T, s store.Store) {
	ctx := context.Background()
	loc := time.FixedZone("X", 5*3600+1800)
	// Sub-millisecond digits are dropped; the instant survives any zone.
	in := time.Date(2031, 7, 3, 4, 5, 6, 789_654_321, loc)
	want := time.UnixMilli(in.UnixMilli()).UTC()
	o := store.Org{ID: ids.New("org-"), Name: "t", CreatedAt: in}
	must(t, s.CreateOrg(ctx, o))
	got := get[store.Org](t, "get")(s.GetOrg(ctx, o.ID)).CreatedAt
	if !got.Equal(want) || got.Nanosecond() != 789_000_000 {
		t.Fatalf("CreatedAt = %v, want %v", got, want)
	}
	p := store.Project{ID: ids.New("proj_"), OrgID: o.ID, CreatedAt: in, ArchivedAt: &in}
	must(t, s.CreateProject(ctx, p))
	gp := get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p.ID))
	if gp.ArchivedAt == nil || !gp.ArchivedAt.Equal(want) {
		t.Fatalf("ArchivedAt = %v, want %v", gp.ArchivedAt, want)
	}
	// A zero time (e.g. a never-probed key) round-trips as zero.
	k := store.ExternalKey{ID: ids.New("extkey_"), OrgID: o.ID, Type: "local", CreatedAt: in}
	must(t, s.CreateExternalKey(ctx, k))
	if at := get[store.ExternalKey](t, "get")(s.GetExternalKey(ctx, o.ID, k.ID)).StatusAt; !at.IsZero() {
		t.Fatalf("zero StatusAt came back as %v", at)
	}
}

var errBoom = errors.New("boom")

func testTxAtomicity(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	p := newProject(t, s, o.ID, "")
	fresh := store.Org{ID: ids.New("org-"), Name: "in tx", CreatedAt: now()}
	ev := store.AuditEvent{ID: ids.New("audit_log-"), OrgID: o.ID, Type: "project.updated", EffectiveAt: now(), Data: json.RawMessage(`{}`)}
	writes := func(q store.Queries) error {
		if err := q.CreateOrg(ctx, fresh); err != nil {
			return err
		}
		up := p
		up.Name, up.CurrentKeyVersion = "changed", 2
		if err := q.UpdateProject(ctx, up); err != nil {
			return err
		}
		if err := q.PutProjectKey(ctx, store.ProjectKey{OrgID: o.ID, ProjectID: p.ID, Version: 2, KEKVersion: "v1",
			Algorithm: "A256KW", Wrapped: []byte("w2"), CreatedAt: now()}); err != nil {
			return err
		}
		if err := q.AppendAudit(ctx, ev); err != nil {
			return err
		}
		// The transaction sees its own writes.
		if got, err := q.GetProject(ctx, o.ID, p.ID); err != nil || got.Name != "changed" {
			return fmt.Errorf("read own write: %+v, %v", got, err)
		}
		return nil
	}
	untouched := func(what string) {
		t.Helper()
		_, err := s.GetOrg(ctx, fresh.ID)
		wantErr(t, what+": org", err, store.ErrNotFound)
		equal(t, what+": project", get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p.ID)), p)
		_, err = s.GetProjectKey(ctx, o.ID, p.ID, 2)
		wantErr(t, what+": project key", err, store.ErrNotFound)
		equal(t, what+": audit", len(get[[]store.AuditEvent](t, "list")(s.ListAudit(ctx, o.ID, store.AuditFilter{}))), 0)
	}

	err := s.InTx(ctx, func(q store.Queries) error {
		if err := writes(q); err != nil {
			return err
		}
		return errBoom
	})
	wantErr(t, "InTx", err, errBoom)
	untouched("after fn error")

	// A failing store call inside fn rolls back the earlier writes too.
	err = s.InTx(ctx, func(q store.Queries) error {
		if err := writes(q); err != nil {
			return err
		}
		return q.CreateOrg(ctx, o) // duplicate
	})
	wantErr(t, "InTx with duplicate", err, store.ErrConflict)
	untouched("after store error")

	// A panic rolls back and leaves the store usable.
	func() {
		defer func() {
			if r := recover(); r != errBoom {
				t.Fatalf("recovered %v, want the panic value", r)
			}
		}()
		_ = s.InTx(ctx, func(q store.Queries) error {
			if err := writes(q); err != nil {
				return err
			}
			panic(errBoom)
		})
	}()
	untouched("after panic")

	must(t, s.InTx(ctx, writes))
	if _, err := s.GetOrg(ctx, fresh.ID); err != nil {
		t.Fatalf("committed org: %v", err)
	}
	if got := get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p.ID)); got.Name != "changed" || got.CurrentKeyVersion != 2 {
		t.Fatalf("committed project = %+v", got)
	}
	if _, err := s.GetProjectKey(ctx, o.ID, p.ID, 2); err != nil {
		t.Fatalf("committed project key: %v", err)
	}
	equal(t, "committed audit", idsOf(get[[]store.AuditEvent](t, "list")(s.ListAudit(ctx, o.ID, store.AuditFilter{})), aid), []string{ev.ID})
}

// testTxConcurrentIncrements runs read-modify-write transactions from many
// goroutines; a lost update shows as a final version below the total.
func testTxConcurrentIncrements(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	p := newProject(t, s, o.ID, "")
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := s.InTx(ctx, func(q store.Queries) error {
					cur, err := q.GetProject(ctx, o.ID, p.ID)
					if err != nil {
						return err
					}
					cur.CurrentKeyVersion++
					if err := q.UpdateProject(ctx, cur); err != nil {
						return err
					}
					// The new version's key, as rotation writes it.
					return q.PutProjectKey(ctx, store.ProjectKey{OrgID: o.ID, ProjectID: p.ID, Version: cur.CurrentKeyVersion,
						KEKVersion: "v1", Algorithm: "A256KW", Wrapped: []byte("w"), CreatedAt: now()})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("increment: %v", err)
	}
	got := get[store.Project](t, "get")(s.GetProject(ctx, o.ID, p.ID))
	if want := 1 + workers*each; got.CurrentKeyVersion != want {
		t.Fatalf("CurrentKeyVersion = %d after %d increments from 1, want %d (lost updates)", got.CurrentKeyVersion, workers*each, want)
	}
	if n := len(get[[]store.ProjectKey](t, "list")(s.ListProjectKeys(ctx, o.ID, p.ID))); n != workers*each {
		t.Fatalf("%d project key versions, want %d", n, workers*each)
	}
}

// testDeploymentID: the first claim stores its candidate, every later one
// (and every concurrent one) gets that id back, whatever it proposes.
func testDeploymentID(t *testing.T, s store.Store) {
	ctx := context.Background()
	wantErr(t, "id before any claim", func() error { _, err := s.DeploymentID(ctx); return err }(), store.ErrNotFound)
	const n = 8
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, err := s.ClaimDeploymentID(ctx, fmt.Sprintf("dep-candidate-%d", i))
			if err != nil {
				t.Errorf("claim %d: %v", i, err)
			}
			got[i] = id
		})
	}
	wg.Wait()
	for i := range n {
		if got[i] != got[0] || got[i] == "" {
			t.Fatalf("concurrent claims disagree: %q", got)
		}
	}
	equal(t, "read back", get[string](t, "deployment id")(s.DeploymentID(ctx)), got[0])
	equal(t, "later claim", get[string](t, "claim")(s.ClaimDeploymentID(ctx, "dep-other")), got[0])
}
