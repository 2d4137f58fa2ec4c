package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

func extra(raw, field string) any {
	var m map[string]any
	_ = json.Unmarshal([]byte(raw), &m)
	return m[field]
}

// TestSDKFlow is the "done when", driven by the official SDK:
// register and validate a local key, create projects on it, list and page,
// refuse a delete in use, archive, re-key to a second key (versions kept,
// old key then deletable) and read the audit log with filters.
func TestSDKFlow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, _, c := e.org("acme")

	k1 := e.registerLocal(c, "primary")
	if !ids.Valid("extkey_", k1.ID) || k1.Object != "organization.external_key" || k1.Type != "local" || k1.Name != "primary" ||
		k1.WorkspaceID != org.ID || k1.Purpose != "ekm" || len(k1.APIProjectIDs) != 0 || k1.CreatedAt != e.clk.Now().Unix() {
		t.Fatalf("registered key: %s", k1.RawJSON())
	}
	if extra(k1.RawJSON(), "status") != "valid" || extra(k1.RawJSON(), "note") == nil || extra(k1.RawJSON(), "local_key_id") == "" {
		t.Fatalf("extras: %s", k1.RawJSON())
	}
	v, err := c.Admin.Organization.ExternalKeys.Validate(ctx, k1.ID)
	if err != nil || v.Status != "valid" {
		t.Fatalf("validate: %v %+v", err, v)
	}

	// Projects: two on k1, one on the operator default key.
	e.clk.Advance(time.Minute)
	p1, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "alpha", ExternalKeyID: openai.String(k1.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if !ids.Valid("proj_", p1.ID) || p1.ExternalKeyID != k1.ID || p1.Status != "active" || p1.Name != "alpha" || p1.ArchivedAt != 0 {
		t.Fatalf("project: %s", p1.RawJSON())
	}
	tCreated := e.clk.Now().Unix()
	e.clk.Advance(time.Minute)
	p2, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "beta"})
	if err != nil {
		t.Fatal(err)
	}
	if p2.JSON.ExternalKeyID.Raw() != "null" {
		t.Fatalf("default-key project must have external_key_id null: %s", p2.RawJSON())
	}
	p3, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "gamma", ExternalKeyID: openai.String(k1.ID)})
	if err != nil {
		t.Fatal(err)
	}
	// Each project has version 1 of its key, wrapped as stated.
	for _, p := range []*openai.Project{p1, p2, p3} {
		recs, err := e.st.ListProjectKeys(ctx, org.ID, p.ID)
		if err != nil || len(recs) != 1 || recs[0].Version != 1 || recs[0].ExternalKeyID != p.ExternalKeyID {
			t.Fatalf("project %s keys: %v %+v", p.Name, err, recs)
		}
	}
	got, err := c.Admin.Organization.ExternalKeys.Get(ctx, k1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.APIProjectIDs, []string{p1.ID, p3.ID}) {
		t.Fatalf("api_project_ids: %v", got.APIProjectIDs)
	}
	var kv map[string]int
	_ = json.Unmarshal([]byte(got.JSON.ExtraFields["kek_versions"].Raw()), &kv)
	if kv[extra(k1.RawJSON(), "current_kek_version").(string)] != 2 {
		t.Fatalf("kek_versions: %s", got.RawJSON())
	}

	// Paging with the SDK's auto-pager, two objects a page.
	k2 := e.registerLocal(c, "secondary")
	var names []string
	it := c.Admin.Organization.Projects.ListAutoPaging(ctx, openai.AdminOrganizationProjectListParams{Limit: openai.Int(2)})
	for it.Next() {
		names = append(names, it.Current().Name)
	}
	if it.Err() != nil || !slices.Equal(names, []string{"alpha", "beta", "gamma"}) {
		t.Fatalf("projects paged: %v %v", it.Err(), names)
	}
	page1, err := c.Admin.Organization.Projects.List(ctx, openai.AdminOrganizationProjectListParams{Limit: openai.Int(2)})
	if err != nil || !page1.HasMore || page1.LastID != p2.ID || len(page1.Data) != 2 {
		t.Fatalf("first page: %v %s", err, page1.RawJSON())
	}
	var keys []string
	kit := c.Admin.Organization.ExternalKeys.ListAutoPaging(ctx, openai.AdminOrganizationExternalKeyListParams{Limit: openai.Int(1)})
	for kit.Next() {
		keys = append(keys, kit.Current().ID)
	}
	if kit.Err() != nil || !slices.Equal(keys, []string{k1.ID, k2.ID}) {
		t.Fatalf("keys paged: %v %v", kit.Err(), keys)
	}
	desc, err := c.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{Order: "desc"})
	if err != nil || len(desc.Data) != 2 || desc.Data[0].ID != k2.ID || desc.HasMore {
		t.Fatalf("keys desc: %v %s", err, desc.RawJSON())
	}

	// A key in use cannot be deleted.
	_, err = c.Admin.Organization.ExternalKeys.Delete(ctx, k1.ID)
	ae := apiErr(t, err, http.StatusConflict)
	if ae.Code != "external_key_in_use" || !strings.Contains(ae.Message, p1.ID) || !strings.Contains(ae.Message, p3.ID) || ae.Response.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("conflict: %s", ae.RawJSON())
	}

	// Archive beta; archived projects refuse updates and leave the default list.
	e.clk.Advance(time.Minute)
	arch, err := c.Admin.Organization.Projects.Archive(ctx, p2.ID)
	if err != nil || arch.Status != "archived" || arch.ArchivedAt != e.clk.Now().Unix() {
		t.Fatalf("archive: %v %+v", err, arch)
	}
	_, err = c.Admin.Organization.Projects.Update(ctx, p2.ID, openai.AdminOrganizationProjectUpdateParams{Name: openai.String("beta2")})
	apiErr(t, err, http.StatusConflict)
	active, err := c.Admin.Organization.Projects.List(ctx, openai.AdminOrganizationProjectListParams{})
	if err != nil || len(active.Data) != 2 {
		t.Fatalf("active list: %v %s", err, active.RawJSON())
	}
	all, err := c.Admin.Organization.Projects.List(ctx, openai.AdminOrganizationProjectListParams{IncludeArchived: openai.Bool(true)})
	if err != nil || len(all.Data) != 3 {
		t.Fatalf("list with archived: %v %s", err, all.RawJSON())
	}

	// Re-key alpha (with a second version) and gamma to k2.
	if _, err := e.svc.RotateProjectKey(ctx, "", org.ID, p1.ID, lifecycle.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := plaintexts(t, e, org.ID, p1.ID)
	e.clk.Advance(time.Minute)
	up, err := c.Admin.Organization.Projects.Update(ctx, p1.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(k2.ID), Name: openai.String("alpha-2")})
	if err != nil || up.ExternalKeyID != k2.ID || up.Name != "alpha-2" {
		t.Fatalf("re-key: %v %+v", err, up)
	}
	recs, err := e.st.ListProjectKeys(ctx, org.ID, p1.ID)
	if err != nil || len(recs) != 2 {
		t.Fatalf("versions after re-key: %v %d", err, len(recs))
	}
	for _, r := range recs {
		if r.ExternalKeyID != k2.ID {
			t.Fatalf("version %d still wrapped by %s", r.Version, r.ExternalKeyID)
		}
	}
	if after := plaintexts(t, e, org.ID, p1.ID); !slices.EqualFunc(before, after, bytes.Equal) {
		t.Fatal("re-key changed the project key")
	}
	if _, err := c.Admin.Organization.Projects.Update(ctx, p3.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(k2.ID)}); err != nil {
		t.Fatal(err)
	}
	g2, err := c.Admin.Organization.ExternalKeys.Get(ctx, k2.ID)
	if err != nil || !slices.Equal(g2.APIProjectIDs, []string{p1.ID, p3.ID}) {
		t.Fatalf("k2 after re-key: %v %s", err, g2.RawJSON())
	}
	del, err := c.Admin.Organization.ExternalKeys.Delete(ctx, k1.ID)
	if err != nil || del.ID != k1.ID || del.Object != "organization.external_key" {
		t.Fatalf("delete: %v %+v", err, del)
	}
	_, err = c.Admin.Organization.ExternalKeys.Get(ctx, k1.ID)
	apiErr(t, err, http.StatusNotFound)

	// Audit log, newest first, with filters.
	lst, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{EventTypes: []string{"project.created"}})
	if err != nil || len(lst.Data) != 3 {
		t.Fatalf("project.created events: %v %s", err, lst.RawJSON())
	}
	ev := lst.Data[2] // oldest: alpha
	if ev.Type != "project.created" || ev.ProjectCreated.ID != p1.ID || ev.ProjectCreated.Data.Name != "alpha" || ev.Project.ID != p1.ID ||
		ev.Project.Name != "alpha-2" || ev.Actor.Type != "api_key" || !ids.Valid("key_", ev.Actor.APIKey.ID) || ev.EffectiveAt != tCreated {
		t.Fatalf("event: %s", ev.RawJSON())
	}
	byProject, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{ProjectIDs: []string{p1.ID}})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, d := range byProject.Data {
		if d.Project.ID != p1.ID {
			t.Fatalf("project filter leaked %s", d.RawJSON())
		}
		types = append(types, string(d.Type))
	}
	if !slices.Equal(types, []string{"project.updated", "project.key_rotated", "project.created"}) {
		t.Fatalf("alpha's events: %v", types)
	}
	upd := byProject.Data[0]
	if upd.ProjectUpdated.ID != p1.ID || upd.ProjectUpdated.ChangesRequested.Title != "alpha-2" {
		t.Fatalf("project.updated: %s", upd.RawJSON())
	}
	window, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{
		EffectiveAt: openai.AdminOrganizationAuditLogListParamsEffectiveAt{Gte: openai.Int(tCreated), Lt: openai.Int(tCreated + 60)},
		EventTypes:  []string{"project.created", "external_key.registered", "external_key.validated"}})
	if err != nil || len(window.Data) != 1 || window.Data[0].ProjectCreated.ID != p1.ID {
		t.Fatalf("time window: %v %s", err, window.RawJSON())
	}
	// Paging through everything with last_id, and back with before.
	var allTypes []string
	ait := c.Admin.Organization.AuditLogs.ListAutoPaging(ctx, openai.AdminOrganizationAuditLogListParams{Limit: openai.Int(3)})
	for ait.Next() {
		allTypes = append(allTypes, string(ait.Current().Type))
	}
	want := e.auditTypes(org.ID)
	slices.Reverse(want)
	if ait.Err() != nil || !slices.Equal(allTypes, want) {
		t.Fatalf("audit paging: %v\n got %v\nwant %v", ait.Err(), allTypes, want)
	}
	for _, typ := range []string{"api_key.created", "external_key.registered", "external_key.validated", "project.created", "project.archived", "project.updated", "external_key.removed", "kms.call"} {
		if !slices.Contains(allTypes, typ) {
			t.Errorf("no %s event in %v", typ, allTypes)
		}
	}
	full, _ := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{Limit: openai.Int(4)})
	back, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{Before: openai.String(full.Data[3].ID), Limit: openai.Int(2)})
	if err != nil || len(back.Data) != 2 || back.Data[0].ID != full.Data[1].ID || back.Data[1].ID != full.Data[2].ID || !back.HasMore {
		t.Fatalf("before: %v %s", err, back.RawJSON())
	}
	// A kms.call event (ekm-specific) renders its payload generically.
	kc, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{EventTypes: []string{"kms.call"}, Limit: openai.Int(1)})
	if err != nil || len(kc.Data) != 1 || kc.Data[0].JSON.Actor.Raw() != "null" || extra(kc.Data[0].RawJSON(), "kms.call") == nil {
		t.Fatalf("kms.call: %v %s", err, kc.RawJSON())
	}
}

// plaintexts returns every version of a project key, read cold.
func plaintexts(t *testing.T, e *env, org, project string) [][]byte {
	t.Helper()
	e.kr.EvictProject(project)
	recs, err := e.st.ListProjectKeys(context.Background(), org, project)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, r := range recs {
		k, err := e.kr.Key(context.Background(), org, project, r.Version)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), k.Bytes()...))
		k.Zero()
	}
	return out
}

func TestAdminKeysAndServiceAccounts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, _, c := e.org("acme")

	nk, err := c.Admin.Organization.AdminAPIKeys.New(ctx, openai.AdminOrganizationAdminAPIKeyNewParams{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(nk.Value, auth.AdminPrefix) || nk.Name != "ci" || nk.RedactedValue != auth.AdminPrefix+"****"+nk.Value[len(nk.Value)-4:] || nk.Owner.ID != org.ID {
		t.Fatalf("new admin key: %s", nk.RawJSON())
	}
	c2 := e.client(nk.Value)
	got, err := c2.Admin.Organization.AdminAPIKeys.Get(ctx, nk.ID)
	if err != nil || got.ID != nk.ID || got.JSON.ExtraFields["value"].Valid() || strings.Contains(got.RawJSON(), nk.Value) {
		t.Fatalf("get admin key: %v %s", err, got.RawJSON())
	}
	lst, err := c2.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{})
	if err != nil || len(lst.Data) != 2 {
		t.Fatalf("list admin keys: %v %s", err, lst.RawJSON())
	}
	// An admin key cannot delete itself, but another key can delete it.
	_, err = c2.Admin.Organization.AdminAPIKeys.Delete(ctx, nk.ID)
	apiErr(t, err, http.StatusConflict)
	d, err := c.Admin.Organization.AdminAPIKeys.Delete(ctx, nk.ID)
	if err != nil || !d.Deleted || d.ID != nk.ID {
		t.Fatalf("delete admin key: %v %+v", err, d)
	}
	_, err = c2.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{})
	apiErr(t, err, http.StatusUnauthorized)

	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if !ids.Valid("svc_acct_", sa.ID) || sa.Role != "member" || !strings.HasPrefix(sa.APIKey.Value, auth.ProjectPrefix) || sa.APIKey.ID == "" {
		t.Fatalf("service account: %s", sa.RawJSON())
	}
	// The data plane authenticates with the value: a project key of this project.
	k, err := e.st.APIKeyByHash(ctx, auth.Hash(sa.APIKey.Value))
	if err != nil || k.Kind != store.KindProject || k.ProjectID != p.ID || k.ServiceAccountID != sa.ID || k.OrgID != org.ID {
		t.Fatalf("stored project key: %v %+v", err, k)
	}
	// A project key is not an admin key.
	if r := e.do(sa.APIKey.Value, "GET", "/v1/organization/projects", ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("project key on admin route: %d", r.Status)
	}
	gsa, err := c.Admin.Organization.Projects.ServiceAccounts.Get(ctx, p.ID, sa.ID)
	if err != nil || gsa.Name != "worker" || strings.Contains(gsa.RawJSON(), sa.APIKey.Value) {
		t.Fatalf("get service account: %v %s", err, gsa.RawJSON())
	}
	sl, err := c.Admin.Organization.Projects.ServiceAccounts.List(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountListParams{})
	if err != nil || len(sl.Data) != 1 {
		t.Fatalf("list service accounts: %v %s", err, sl.RawJSON())
	}
	sd, err := c.Admin.Organization.Projects.ServiceAccounts.Delete(ctx, p.ID, sa.ID)
	if err != nil || !sd.Deleted {
		t.Fatalf("delete service account: %v %+v", err, sd)
	}
	if _, err := e.st.APIKeyByHash(ctx, auth.Hash(sa.APIKey.Value)); err == nil {
		t.Fatal("service account's key survived its deletion")
	}
	if _, err := c.Admin.Organization.Projects.Archive(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "late"})
	apiErr(t, err, http.StatusConflict)

	types := e.auditTypes(org.ID)
	want := []string{"api_key.created", "api_key.created", "api_key.deleted", "project.created", "service_account.created", "api_key.created", "api_key.deleted", "service_account.deleted", "project.archived"}
	if !slices.Equal(types, want) {
		t.Fatalf("audit: %v", types)
	}
	// No key value ever reaches the audit log.
	evs, _ := e.st.ListAudit(ctx, org.ID, store.AuditFilter{Limit: 100})
	for _, ev := range evs {
		if strings.Contains(string(ev.Data), nk.Value) || strings.Contains(string(ev.Data), sa.APIKey.Value) {
			t.Fatalf("key value in audit event %s", ev.Type)
		}
	}
}

// TestDeleteKeyOfArchivedProject: an archived project's data is still
// wrapped by its key, so the key cannot be removed.
func TestDeleteKeyOfArchivedProject(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, _, c := e.org("acme")
	k := e.registerLocal(c, "k")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "old", ExternalKeyID: openai.String(k.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.Projects.Archive(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	// Archiving twice is idempotent.
	again, err := c.Admin.Organization.Projects.Archive(ctx, p.ID)
	if err != nil || again.Status != "archived" {
		t.Fatalf("archive again: %v %+v", err, again)
	}
	_, err = c.Admin.Organization.ExternalKeys.Delete(ctx, k.ID)
	if ae := apiErr(t, err, http.StatusConflict); !strings.Contains(ae.Message, "archived project(s) "+p.ID) {
		t.Fatalf("conflict message: %s", ae.Message)
	}
	if _, err := c.Admin.Organization.ExternalKeys.Get(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	// purpose filter: every key here is an ekm key.
	l, err := c.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{Purpose: "ekm"})
	if err != nil || len(l.Data) != 1 {
		t.Fatalf("purpose=ekm: %v %s", err, l.RawJSON())
	}
	l, err = c.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{Purpose: "psp_decryption"})
	if err != nil || len(l.Data) != 0 {
		t.Fatalf("purpose=psp_decryption: %v %s", err, l.RawJSON())
	}
	n := 0
	for _, typ := range e.auditTypes(k.WorkspaceID) {
		if typ == "project.archived" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d project.archived events", n)
	}
}
