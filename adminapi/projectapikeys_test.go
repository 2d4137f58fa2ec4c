package adminapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

// encryptStatus calls the data plane's encrypt with a project key.
func (e *env) encryptStatus(projectKey string) int {
	e.t.Helper()
	return e.do(projectKey, "POST", "/v1/crypto/encrypt", `{"plaintext":"aGVsbG8="}`).Status
}

// lastAudit returns the org's newest events of type typ, newest first.
func (e *env) audit(orgID, typ string) []store.AuditEvent {
	e.t.Helper()
	evs, err := e.st.ListAudit(context.Background(), orgID, store.AuditFilter{Types: []string{typ}, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func payloadID(t *testing.T, ev store.AuditEvent) string {
	t.Helper()
	var p struct{ ID string }
	if err := json.Unmarshal(ev.Data, &p); err != nil {
		t.Fatal(err)
	}
	return p.ID
}

func TestProjectAPIKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, adminKey, c := e.org("acme")
	keys := c.Admin.Organization.Projects.APIKeys
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	newSA := func(project, name string) *openai.AdminOrganizationProjectServiceAccountNewResponse {
		t.Helper()
		sa, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, project, openai.AdminOrganizationProjectServiceAccountNewParams{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return sa
	}
	// q's key sits between p's two in id order: p's pages must skip it.
	s1 := newSA(p.ID, "one")
	sq := newSA(q.ID, "other")
	s2 := newSA(p.ID, "two")

	// List: p's keys only, in OpenAI's shape, without their values.
	l, err := keys.List(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Data) != 2 || l.Data[0].ID != s1.APIKey.ID || l.Data[1].ID != s2.APIKey.ID || l.HasMore {
		t.Fatalf("list: %s", l.RawJSON())
	}
	for i, sa := range []*openai.AdminOrganizationProjectServiceAccountNewResponse{s1, s2} {
		k := l.Data[i]
		if k.Object != "organization.project.api_key" || k.Name != sa.Name || k.CreatedAt != e.clk.Now().Unix() ||
			k.Owner.Type != "service_account" || k.Owner.ServiceAccount.ID != sa.ID || k.Owner.ServiceAccount.Name != sa.Name ||
			k.Owner.ServiceAccount.Role != "member" || k.OwnerProjectAccess != openai.ProjectAPIKeyOwnerProjectAccessActive ||
			k.JSON.LastUsedAt.Raw() != "null" || k.JSON.ExpiresAt.Raw() != "null" {
			t.Fatalf("key %d: %s", i, k.RawJSON())
		}
		v := sa.APIKey.Value
		if k.RedactedValue != "sk-proj-****"+v[len(v)-4:] || strings.Contains(k.RawJSON(), v[len("sk-proj-"):len(v)-4]) {
			t.Fatalf("redaction: %s", k.RawJSON())
		}
	}
	// Pages of one skip q's key; the auto-pager walks them.
	one, err := keys.List(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{Limit: openai.Int(1)})
	if err != nil || len(one.Data) != 1 || !one.HasMore {
		t.Fatalf("page 1: %v %s", err, one.RawJSON())
	}
	two, err := keys.List(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{Limit: openai.Int(1), After: openai.String(one.Data[0].ID)})
	if err != nil || len(two.Data) != 1 || two.Data[0].ID != s2.APIKey.ID || two.HasMore {
		t.Fatalf("page 2: %v %s", err, two.RawJSON())
	}
	var walked []string
	it := keys.ListAutoPaging(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{Limit: openai.Int(1)})
	for it.Next() {
		walked = append(walked, it.Current().ID)
	}
	if it.Err() != nil || len(walked) != 2 {
		t.Fatalf("auto-pager: %v %v", it.Err(), walked)
	}
	// owner_project_access: every key of a live project is active.
	for access, want := range map[openai.AdminOrganizationProjectAPIKeyListParamsOwnerProjectAccess]int{"active": 2, "any": 2, "inactive": 0} {
		l, err := keys.List(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{OwnerProjectAccess: access})
		if err != nil || len(l.Data) != want {
			t.Fatalf("owner_project_access=%s: %v %s", access, err, l.RawJSON())
		}
	}

	got, err := keys.Get(ctx, p.ID, s1.APIKey.ID)
	if err != nil || got.ID != s1.APIKey.ID || got.Owner.ServiceAccount.ID != s1.ID {
		t.Fatalf("get: %v", err)
	}

	// Delete: the key stops authenticating at once; the other key and the
	// service account stay.
	if st := e.encryptStatus(s1.APIKey.Value); st != http.StatusOK {
		t.Fatalf("encrypt before delete: %d", st)
	}
	del, err := keys.Delete(ctx, p.ID, s1.APIKey.ID)
	if err != nil || del.ID != s1.APIKey.ID || !del.Deleted || del.Object != "organization.project.api_key.deleted" {
		t.Fatalf("delete: %v %+v", err, del)
	}
	if st := e.encryptStatus(s1.APIKey.Value); st != http.StatusUnauthorized {
		t.Fatalf("deleted key still authenticates: %d", st)
	}
	if st := e.encryptStatus(s2.APIKey.Value); st != http.StatusOK {
		t.Fatalf("other key: %d", st)
	}
	if _, err := c.Admin.Organization.Projects.ServiceAccounts.Get(ctx, p.ID, s1.ID); err != nil {
		t.Fatalf("service account went with its key: %v", err)
	}
	_, err = keys.Get(ctx, p.ID, s1.APIKey.ID)
	apiErr(t, err, http.StatusNotFound)
	_, err = keys.Delete(ctx, p.ID, s1.APIKey.ID)
	apiErr(t, err, http.StatusNotFound)
	evs := e.audit(org.ID, "api_key.deleted")
	if len(evs) != 1 || payloadID(t, evs[0]) != s1.APIKey.ID || evs[0].ProjectID != p.ID || evs[0].Actor == "" {
		t.Fatalf("api_key.deleted events: %+v", evs)
	}
	al, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{EventTypes: []string{"api_key.deleted"}})
	if err != nil || len(al.Data) != 1 || al.Data[0].Project.ID != p.ID || !strings.Contains(al.Data[0].RawJSON(), s1.APIKey.ID) {
		t.Fatalf("audit log: %v %s", err, al.RawJSON())
	}

	// Another project's key, through this project: not found, and untouched.
	_, err = keys.Get(ctx, p.ID, sq.APIKey.ID)
	apiErr(t, err, http.StatusNotFound)
	_, err = keys.Delete(ctx, p.ID, sq.APIKey.ID)
	apiErr(t, err, http.StatusNotFound)
	if st := e.encryptStatus(sq.APIKey.Value); st != http.StatusOK {
		t.Fatalf("other project's key: %d", st)
	}
	// Admin keys are not project keys.
	aks, err := c.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = keys.Delete(ctx, p.ID, aks.Data[0].ID)
	apiErr(t, err, http.StatusNotFound)

	// Update: "scopes": [] (all permissions) is what every key has.
	up, err := keys.Update(ctx, p.ID, s2.APIKey.ID, openai.AdminOrganizationProjectAPIKeyUpdateParams{Scopes: []string{}})
	if err != nil || up.ID != s2.APIKey.ID {
		t.Fatalf("update scopes []: %v", err)
	}
	_, err = keys.Update(ctx, p.ID, s2.APIKey.ID, openai.AdminOrganizationProjectAPIKeyUpdateParams{Scopes: []string{"api.all.read"}})
	if ae := apiErr(t, err, http.StatusBadRequest); ae.Code != "unsupported_parameter" || ae.Param != "scopes" {
		t.Fatalf("scopes: %s", ae.RawJSON())
	}
	_, err = keys.Update(ctx, p.ID, s2.APIKey.ID, openai.AdminOrganizationProjectAPIKeyUpdateParams{ExpiresInSeconds: 3600})
	if ae := apiErr(t, err, http.StatusBadRequest); ae.Code != "unsupported_parameter" || ae.Param != "expires_in_seconds" {
		t.Fatalf("expires_in_seconds: %s", ae.RawJSON())
	}

	// Archived: the keys are listed as inactive (the data plane refuses
	// them) and can still be deleted.
	if _, err := c.Admin.Organization.Projects.Archive(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	for access, want := range map[openai.AdminOrganizationProjectAPIKeyListParamsOwnerProjectAccess]int{"active": 0, "any": 1, "inactive": 1, "": 1} {
		l, err := keys.List(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{OwnerProjectAccess: access})
		if err != nil || len(l.Data) != want {
			t.Fatalf("archived, owner_project_access=%q: %v %s", access, err, l.RawJSON())
		}
		if want == 1 && l.Data[0].OwnerProjectAccess != openai.ProjectAPIKeyOwnerProjectAccessInactive {
			t.Fatalf("archived project's key: %s", l.Data[0].RawJSON())
		}
	}
	if _, err := keys.Delete(ctx, p.ID, s2.APIKey.ID); err != nil {
		t.Fatalf("delete on archived project: %v", err)
	}
	if r := e.do(adminKey, "GET", "/v1/organization/projects/"+p.ID+"/api_keys", ""); r.Status != 200 || r.Raw != `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`+"\n" {
		t.Fatalf("empty list: %d %s", r.Status, r.Raw)
	}
}

// TestProjectKeyPagingScansPastBatches: a project's keys are found among
// more of the org's keys than one store query reads.
func TestProjectKeyPagingScansPastBatches(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, _, c := e.org("acme")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	// Rows straight in the store: 2.5 batches of another project's keys
	// between p's first and last key.
	put := func(project string, n int) []string {
		var out []string
		err := e.st.InTx(ctx, func(qs store.Queries) error {
			out = nil
			for range n {
				sa := store.ServiceAccount{ID: ids.New(prefixServiceAccount), OrgID: org.ID, ProjectID: project, Name: "sa", Role: "member", CreatedAt: e.clk.Now()}
				_, hash, red := newKeyValue(store.KindProject)
				k := store.APIKey{ID: ids.New(prefixAPIKey), OrgID: org.ID, Kind: store.KindProject, ProjectID: project, ServiceAccountID: sa.ID, Name: "k", Hash: hash, RedactedValue: red, CreatedAt: e.clk.Now()}
				if err := qs.CreateServiceAccount(ctx, sa); err != nil {
					return err
				}
				if err := qs.CreateAPIKey(ctx, k); err != nil {
					return err
				}
				out = append(out, k.ID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := put(p.ID, 1)
	put(other.ID, scanBatch*5/2)
	want = append(want, put(p.ID, 2)...)
	var got []string
	it := c.Admin.Organization.Projects.APIKeys.ListAutoPaging(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{Limit: openai.Int(2)})
	for it.Next() {
		got = append(got, it.Current().ID)
	}
	if it.Err() != nil || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v (%v), want %v", got, it.Err(), want)
	}
}

func TestServiceAccountUpdate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, key, c := e.org("acme")
	sas := c.Admin.Organization.Projects.ServiceAccounts
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := sas.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/organization/projects/" + p.ID + "/service_accounts/" + sa.ID

	// No change (role member, same name): answered as is, no event.
	got, err := sas.Update(ctx, p.ID, sa.ID, openai.AdminOrganizationProjectServiceAccountUpdateParams{Role: "member", Name: openai.String("worker")})
	if err != nil || got.Name != "worker" || got.Role != "member" || got.ID != sa.ID {
		t.Fatalf("no-op update: %v %+v", err, got)
	}
	if evs := e.audit(org.ID, "service_account.updated"); len(evs) != 0 {
		t.Fatalf("no-op update wrote %d events", len(evs))
	}

	// Rename: the account and its key's owner change; the key keeps working.
	got, err = sas.Update(ctx, p.ID, sa.ID, openai.AdminOrganizationProjectServiceAccountUpdateParams{Name: openai.String("renamed")})
	if err != nil || got.Name != "renamed" || got.Role != "member" || got.CreatedAt != sa.CreatedAt || got.Object != "organization.project.service_account" {
		t.Fatalf("rename: %v %+v", err, got)
	}
	if g, err := sas.Get(ctx, p.ID, sa.ID); err != nil || g.Name != "renamed" {
		t.Fatalf("get after rename: %v %+v", err, g)
	}
	k, err := c.Admin.Organization.Projects.APIKeys.Get(ctx, p.ID, sa.APIKey.ID)
	if err != nil || k.Owner.ServiceAccount.Name != "renamed" || k.CreatedAt != sa.APIKey.CreatedAt {
		t.Fatalf("key after rename: %v %s", err, k.RawJSON())
	}
	if st := e.encryptStatus(sa.APIKey.Value); st != http.StatusOK {
		t.Fatalf("key after rename: %d", st)
	}
	evs := e.audit(org.ID, "service_account.updated")
	if len(evs) != 1 || evs[0].ProjectID != p.ID || string(evs[0].Data) != `{"changes_requested":{"name":"renamed"},"id":"`+sa.ID+`","previous":{"name":"worker"}}` {
		t.Fatalf("service_account.updated: %+v %s", evs, evs[0].Data)
	}
	// The rename touches no key: no key events.
	if n := len(e.audit(org.ID, "api_key.deleted")) + len(e.audit(org.ID, "api_key.created")); n != 2 { // the org's and the account's creation
		t.Fatalf("rename wrote key events: %d", n)
	}

	// What ekm cannot do is refused by name.
	_, err = sas.Update(ctx, p.ID, sa.ID, openai.AdminOrganizationProjectServiceAccountUpdateParams{Role: "owner"})
	if ae := apiErr(t, err, http.StatusBadRequest); ae.Code != "unsupported_role" || ae.Param != "role" {
		t.Fatalf("owner: %s", ae.RawJSON())
	}
	for _, tc := range []struct{ body, code, param string }{
		{`{"role":"admin"}`, "invalid_value", "role"},
		{`{"role":1}`, "invalid_type", "role"},
		{`{"name":""}`, "invalid_value", "name"},
		{`{"name":"` + strings.Repeat("n", maxName+1) + `"}`, "string_above_max_length", "name"},
		{`{"name":"x","owner":"me"}`, "unknown_parameter", "owner"},
		{`{"name":`, "invalid_json", ""},
	} {
		r := e.do(key, "POST", path, tc.body)
		if r.Status != http.StatusBadRequest || r.errField("code") != tc.code || r.errField("param") != tc.param {
			t.Errorf("%s: %d %s", tc.body, r.Status, r.Raw)
		}
	}
	if g, _ := sas.Get(ctx, p.ID, sa.ID); g.Name != "renamed" {
		t.Fatalf("refused update changed the name: %q", g.Name)
	}

	// Archived projects cannot be changed.
	if _, err := c.Admin.Organization.Projects.Archive(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = sas.Update(ctx, p.ID, sa.ID, openai.AdminOrganizationProjectServiceAccountUpdateParams{Name: openai.String("late")})
	if ae := apiErr(t, err, http.StatusConflict); ae.Code != "project_archived" {
		t.Fatalf("archived: %s", ae.RawJSON())
	}
}

// TestServiceAccountDeleteRecordsKeyDeletion: deleting an account revokes
// its key and says so in the audit log, in the same transaction.
func TestServiceAccountDeleteRecordsKeyDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, _, c := e.org("acme")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "stays"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.Projects.ServiceAccounts.Delete(ctx, p.ID, sa.ID); err != nil {
		t.Fatal(err)
	}
	types := e.auditTypes(org.ID)
	if tail := strings.Join(types[len(types)-2:], ","); tail != "api_key.deleted,service_account.deleted" {
		t.Fatalf("events: %v", types)
	}
	evs := e.audit(org.ID, "api_key.deleted")
	if len(evs) != 1 || payloadID(t, evs[0]) != sa.APIKey.ID || evs[0].ProjectID != p.ID {
		t.Fatalf("api_key.deleted: %+v", evs)
	}
	if st := e.encryptStatus(sa.APIKey.Value); st != http.StatusUnauthorized {
		t.Fatalf("deleted account's key: %d", st)
	}
	if st := e.encryptStatus(keep.APIKey.Value); st != http.StatusOK {
		t.Fatalf("other account's key: %d", st)
	}

	// An account whose key was deleted first records only its own deletion.
	if _, err := c.Admin.Organization.Projects.APIKeys.Delete(ctx, p.ID, keep.APIKey.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.Projects.ServiceAccounts.Delete(ctx, p.ID, keep.ID); err != nil {
		t.Fatal(err)
	}
	if n := len(e.audit(org.ID, "api_key.deleted")); n != 2 {
		t.Fatalf("api_key.deleted events: %d, want 2", n)
	}
}
