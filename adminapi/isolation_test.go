package adminapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/store"
)

// TestOrgIsolation: every route of org B answers 404 for org A's objects,
// lists show nothing of A, and nothing of A changes.
func TestOrgIsolation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	orgA, _, a := e.org("A")
	orgB, keyB, b := e.org("B")

	kA := e.registerLocal(a, "a-key")
	pA, err := a.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "a-proj", ExternalKeyID: openai.String(kA.ID)})
	if err != nil {
		t.Fatal(err)
	}
	saA, err := a.Admin.Organization.Projects.ServiceAccounts.New(ctx, pA.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "a-sa"})
	if err != nil {
		t.Fatal(err)
	}
	adminA, err := a.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{})
	if err != nil || len(adminA.Data) != 1 {
		t.Fatal(err)
	}
	aKeyID := adminA.Data[0].ID
	pB, err := b.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "b-proj"})
	if err != nil {
		t.Fatal(err)
	}
	auditA := e.auditTypes(orgA.ID)

	routes := []struct{ method, path, body string }{
		{"GET", "/v1/organization/external_keys/" + kA.ID, ""},
		{"DELETE", "/v1/organization/external_keys/" + kA.ID, ""},
		{"POST", "/v1/organization/external_keys/" + kA.ID + "/validate", ""},
		{"GET", "/v1/organization/projects/" + pA.ID, ""},
		{"POST", "/v1/organization/projects/" + pA.ID, `{"name":"stolen"}`},
		{"POST", "/v1/organization/projects/" + pA.ID + "/archive", ""},
		{"POST", "/v1/organization/projects/" + pA.ID + "/service_accounts", `{"name":"x"}`},
		{"GET", "/v1/organization/projects/" + pA.ID + "/service_accounts", ""},
		{"GET", "/v1/organization/projects/" + pA.ID + "/service_accounts/" + saA.ID, ""},
		{"DELETE", "/v1/organization/projects/" + pA.ID + "/service_accounts/" + saA.ID, ""},
		{"GET", "/v1/organization/projects/" + pB.ID + "/service_accounts/" + saA.ID, ""},
		{"DELETE", "/v1/organization/projects/" + pB.ID + "/service_accounts/" + saA.ID, ""},
		{"POST", "/v1/organization/projects/" + pA.ID + "/service_accounts/" + saA.ID, `{"name":"stolen"}`},
		{"POST", "/v1/organization/projects/" + pB.ID + "/service_accounts/" + saA.ID, `{"name":"stolen"}`},
		{"GET", "/v1/organization/projects/" + pA.ID + "/api_keys", ""},
		{"GET", "/v1/organization/projects/" + pA.ID + "/api_keys/" + saA.APIKey.ID, ""},
		{"POST", "/v1/organization/projects/" + pA.ID + "/api_keys/" + saA.APIKey.ID, `{"scopes":[]}`},
		{"DELETE", "/v1/organization/projects/" + pA.ID + "/api_keys/" + saA.APIKey.ID, ""},
		{"GET", "/v1/organization/projects/" + pB.ID + "/api_keys/" + saA.APIKey.ID, ""},
		{"DELETE", "/v1/organization/projects/" + pB.ID + "/api_keys/" + saA.APIKey.ID, ""},
		{"DELETE", "/v1/organization/projects/" + pB.ID + "/api_keys/" + aKeyID, ""},
		{"GET", "/v1/organization/admin_api_keys/" + aKeyID, ""},
		{"DELETE", "/v1/organization/admin_api_keys/" + aKeyID, ""},
		{"POST", "/v1/organization/projects", `{"name":"x","external_key_id":"` + kA.ID + `"}`},
		{"POST", "/v1/organization/projects/" + pB.ID, `{"external_key_id":"` + kA.ID + `"}`},
	}
	for _, rt := range routes {
		r := e.do(keyB, rt.method, rt.path, rt.body)
		if r.Status != http.StatusNotFound {
			t.Errorf("%s %s as B: %d %s", rt.method, rt.path, r.Status, r.Raw)
		}
		if strings.Contains(r.Raw, "a-key") || strings.Contains(r.Raw, "a-proj") {
			t.Errorf("%s %s leaked A's data: %s", rt.method, rt.path, r.Raw)
		}
	}
	// The SDK sees the same.
	_, err = b.Admin.Organization.ExternalKeys.Get(ctx, kA.ID)
	apiErr(t, err, http.StatusNotFound)
	_, err = b.Admin.Organization.Projects.Get(ctx, pA.ID)
	apiErr(t, err, http.StatusNotFound)
	_, err = b.Admin.Organization.Projects.APIKeys.Delete(ctx, pA.ID, saA.APIKey.ID)
	apiErr(t, err, http.StatusNotFound)
	_, err = b.Admin.Organization.Projects.ServiceAccounts.Update(ctx, pA.ID, saA.ID, openai.AdminOrganizationProjectServiceAccountUpdateParams{Name: openai.String("stolen")})
	apiErr(t, err, http.StatusNotFound)
	bKeys, err := b.Admin.Organization.Projects.APIKeys.List(ctx, pB.ID, openai.AdminOrganizationProjectAPIKeyListParams{})
	if err != nil || len(bKeys.Data) != 0 {
		t.Fatalf("B's project keys: %v %s", err, bKeys.RawJSON())
	}

	// B's lists hold only B's objects.
	ks, err := b.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{})
	if err != nil || len(ks.Data) != 0 {
		t.Fatalf("B's keys: %v %s", err, ks.RawJSON())
	}
	ps, err := b.Admin.Organization.Projects.List(ctx, openai.AdminOrganizationProjectListParams{IncludeArchived: openai.Bool(true)})
	if err != nil || len(ps.Data) != 1 || ps.Data[0].ID != pB.ID {
		t.Fatalf("B's projects: %v %s", err, ps.RawJSON())
	}
	aks, err := b.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{})
	if err != nil || len(aks.Data) != 1 || aks.Data[0].ID == aKeyID {
		t.Fatalf("B's admin keys: %v %s", err, aks.RawJSON())
	}
	al, err := b.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{ProjectIDs: []string{pA.ID}})
	if err != nil || len(al.Data) != 0 {
		t.Fatalf("B's audit log shows A's project: %v %s", err, al.RawJSON())
	}
	all, err := b.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{Limit: openai.Int(100)})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range all.Data {
		if strings.Contains(ev.RawJSON(), orgA.ID) || strings.Contains(ev.RawJSON(), pA.ID) || strings.Contains(ev.RawJSON(), kA.ID) {
			t.Fatalf("B's audit log holds A's event: %s", ev.RawJSON())
		}
	}

	// A is untouched.
	p, err := e.st.GetProject(ctx, orgA.ID, pA.ID)
	if err != nil || p.Name != "a-proj" || p.ArchivedAt != nil || p.ExternalKeyID != kA.ID {
		t.Fatalf("A's project changed: %v %+v", err, p)
	}
	if sa, err := e.st.GetServiceAccount(ctx, orgA.ID, pA.ID, saA.ID); err != nil || sa.Name != "a-sa" {
		t.Fatalf("A's service account changed: %v %+v", err, sa)
	}
	if r := e.do(saA.APIKey.Value, "POST", "/v1/crypto/encrypt", `{"plaintext":"aGk="}`); r.Status != http.StatusOK {
		t.Fatalf("A's project key: %d %s", r.Status, r.Raw)
	}
	if _, err := e.st.GetAPIKey(ctx, orgA.ID, aKeyID); err != nil {
		t.Fatal(err)
	}
	if got := e.auditTypes(orgA.ID); len(got) != len(auditA) {
		t.Fatalf("A's audit log changed: %v → %v", auditA, got)
	}
	if evs, _ := e.st.ListAudit(ctx, orgB.ID, store.AuditFilter{Types: []string{"external_key.validated"}}); len(evs) != 0 {
		t.Fatal("B validated A's key")
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	_, key, _ := e.org("A")
	for _, h := range []string{"", "Bearer ", "Bearer sk-admin-nope", "Basic " + key, "Bearer " + key + "x", "Bearer sk-proj-" + key[len("sk-admin-"):]} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/organization/projects", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d", h, res.StatusCode)
		}
	}
	// The scheme is case-insensitive (RFC 9110).
	for _, h := range []string{"bearer " + key, "BEARER " + key} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/organization/projects", nil)
		req.Header.Set("Authorization", h)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("Authorization %q: %d", h[:7], res.StatusCode)
		}
	}
	// A key of the other kind is named as such, on both APIs.
	ac := e.client(key)
	p, err := ac.Admin.Organization.Projects.New(context.Background(), openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := ac.Admin.Organization.Projects.ServiceAccounts.New(context.Background(), p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "sa"})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do(sa.APIKey.Value, "GET", "/v1/organization/projects", ""); r.Status != 401 ||
		!strings.Contains(r.errField("message"), "this is a project API key (sk-proj-…). The Admin API needs an admin key (sk-admin-…)") {
		t.Fatalf("project key on the Admin API: %d %s", r.Status, r.Raw)
	}
	if r := e.do(key, "POST", "/v1/crypto/encrypt", `{"plaintext":"aGk="}`); r.Status != 401 ||
		!strings.Contains(r.errField("message"), "this is an admin key (sk-admin-…). The Files and crypto APIs need a project API key (sk-proj-…)") {
		t.Fatalf("admin key on the data plane: %d %s", r.Status, r.Raw)
	}
	// The SDK with a wrong key gets OpenAI's 401 error.
	c := e.client("sk-admin-wrong")
	_, err = c.Admin.Organization.Projects.List(context.Background(), openai.AdminOrganizationProjectListParams{})
	if ae := apiErr(t, err, http.StatusUnauthorized); ae.Code != "invalid_api_key" {
		t.Fatalf("401 code %q", ae.Code)
	}
	// Unknown routes and methods answer in JSON, after authentication.
	if r := e.do(key, "GET", "/v1/organization/nothing", ""); r.Status != http.StatusNotFound || r.errField("code") != "unknown_url" {
		t.Fatalf("unknown route: %d %s", r.Status, r.Raw)
	}
	if r := e.do(key, "PUT", "/v1/organization/projects", ""); r.Status != http.StatusNotFound {
		t.Fatalf("unknown method: %d %s", r.Status, r.Raw)
	}
	if r := e.do("", "GET", "/v1/organization/nothing", ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("unauthenticated unknown route: %d", r.Status)
	}
}
