package adminapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/store"
)

// snapshot counts an org's rows that a failed request must not add to.
type snapshot struct{ keys, projects, audit, adminKeys, serviceAccounts int }

func (e *env) snapshot(org, project string) snapshot {
	e.t.Helper()
	ctx := context.Background()
	ks, err1 := e.st.ListExternalKeys(ctx, org, "", store.Page{Limit: 1000})
	ps, err2 := e.st.ListProjects(ctx, org, true, store.Page{Limit: 1000})
	as, err3 := e.st.ListAudit(ctx, org, store.AuditFilter{Limit: 1000})
	aks, err4 := e.st.ListAPIKeys(ctx, org, "", store.Page{Limit: 1000})
	sas, err5 := e.st.ListServiceAccounts(ctx, org, project, store.Page{Limit: 1000})
	for _, err := range []error{err1, err2, err3, err4, err5} {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return snapshot{len(ks), len(ps), len(as), len(aks), len(sas)}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, key, c := e.org("acme")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "sa"})
	if err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(org.ID, p.ID)

	const ek = "/v1/organization/external_keys"
	pk := "/v1/organization/projects/" + p.ID + "/api_keys"
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name, method, path, body string
		status                   int
		code, param              string
	}{
		{"syntax", "POST", ek, `{`, 400, "invalid_json", ""},
		{"not an object", "POST", ek, `[]`, 400, "invalid_json", ""},
		{"null", "POST", ek, `null`, 400, "invalid_json", ""},
		{"empty", "POST", ek, ``, 400, "invalid_json", ""},
		{"two values", "POST", ek, `{"type":"local","name":"x"} {}`, 400, "invalid_json", ""},
		{"duplicate field", "POST", ek, `{"type":"local","name":"x","name":"y"}`, 400, "invalid_json", "name"},
		{"duplicate field escaped", "POST", "/v1/organization/projects", `{"name":"x","n\u0061me":"y"}`, 400, "invalid_json", "name"},
		{"invalid utf-8 name", "POST", "/v1/organization/projects", "{\"name\":\"a\xffb\"}", 400, "invalid_value", "name"},
		{"lone surrogate name", "POST", "/v1/organization/projects", `{"name":"a\ud800b"}`, 400, "invalid_value", "name"},
		{"no type", "POST", ek, `{"name":"x"}`, 400, "missing_required_parameter", "type"},
		{"no name", "POST", ek, `{"type":"local"}`, 400, "missing_required_parameter", "name"},
		{"blank name", "POST", ek, `{"type":"local","name":"  "}`, 400, "missing_required_parameter", "name"},
		{"name not a string", "POST", ek, `{"type":"local","name":5}`, 400, "invalid_type", "name"},
		{"type not a string", "POST", ek, `{"type":{"a":1},"name":"x"}`, 400, "invalid_type", "type"},
		{"control char", "POST", ek, `{"type":"local","name":"a\u0000b"}`, 400, "invalid_value", "name"},
		{"unknown field", "POST", ek, `{"type":"local","name":"x","bogus":1}`, 400, "unknown_parameter", "bogus"},
		{"local_key_id", "POST", ek, `{"type":"local","name":"x","local_key_id":"default"}`, 400, "unknown_parameter", "local_key_id"},
		{"unknown type", "POST", ek, `{"type":"nope","name":"x"}`, 400, "unsupported_type", "type"},
		{"weird type", "POST", ek, `{"type":"NO PE","name":"x"}`, 400, "unsupported_type", "type"},
		{"unregistered driver", "POST", ek, `{"type":"aws","name":"x","external_id":"e","kms_arn":"arn:aws:kms:x","role_arn":"arn:aws:iam::1:role/r"}`, 400, "unsupported_type", "type"},
		// A type described but not enabled is refused before its fields
		// are checked (they could not make it work).
		{"aws missing field", "POST", ek, `{"type":"aws","name":"x","kms_arn":"a","role_arn":"r"}`, 400, "unsupported_type", "type"},
		{"gcp wrong field", "POST", ek, `{"type":"gcp","name":"x","kms_arn":"a"}`, 400, "unsupported_type", "type"},
		{"long name", "POST", ek, `{"type":"local","name":"` + long(257) + `"}`, 400, "string_above_max_length", "name"},
		{"long arn", "POST", ek, `{"type":"aws","name":"x","external_id":"e","kms_arn":"` + long(2049) + `","role_arn":"r"}`, 400, "unsupported_type", "type"},
		{"psp purpose", "POST", ek, `{"type":"local","name":"x","purpose":"psp_decryption"}`, 400, "unsupported_purpose", "purpose"},
		{"bad purpose", "POST", ek, `{"type":"local","name":"x","purpose":"other"}`, 400, "invalid_value", "purpose"},
		{"driver check", "POST", ek, `{"type":"local","name":"x","key_version":"0"}`, 400, "invalid_key_version", "key_version"},
		{"too large", "POST", ek, `{"type":"local","name":"` + long(testMaxBody) + `"}`, 413, "request_too_large", ""},

		{"project no name", "POST", "/v1/organization/projects", `{}`, 400, "missing_required_parameter", "name"},
		{"project bad key id", "POST", "/v1/organization/projects", `{"name":"x","external_key_id":"extkey_bad"}`, 404, "not_found", "external_key_id"},
		{"project unknown key", "POST", "/v1/organization/projects", `{"name":"x","external_key_id":"extkey_06h2azmcxyds50vdkg1t8480rm"}`, 404, "not_found", "external_key_id"},
		{"project empty key id", "POST", "/v1/organization/projects", `{"name":"x","external_key_id":""}`, 400, "invalid_value", "external_key_id"},
		{"project key id type", "POST", "/v1/organization/projects", `{"name":"x","external_key_id":7}`, 400, "invalid_type", "external_key_id"},
		{"project residency", "POST", "/v1/organization/projects", `{"name":"x","residency":"EU_STORAGE_PROCESSING"}`, 400, "unsupported_parameter", "residency"},
		{"project unknown field", "POST", "/v1/organization/projects", `{"name":"x","owner":"me"}`, 400, "unknown_parameter", "owner"},
		{"update empty name", "POST", "/v1/organization/projects/" + p.ID, `{"name":""}`, 400, "invalid_value", "name"},
		{"update unknown field", "POST", "/v1/organization/projects/" + p.ID, `{"status":"archived"}`, 400, "unknown_parameter", "status"},
		{"update unknown key", "POST", "/v1/organization/projects/" + p.ID, `{"external_key_id":"extkey_06h2azmcxyds50vdkg1t8480rm"}`, 404, "not_found", "external_key_id"},
		{"update bad json", "POST", "/v1/organization/projects/" + p.ID, `{"name":`, 400, "invalid_json", ""},

		{"admin key expiry", "POST", "/v1/organization/admin_api_keys", `{"name":"x","expires_in_seconds":60}`, 400, "unsupported_parameter", "expires_in_seconds"},
		{"admin key no name", "POST", "/v1/organization/admin_api_keys", `{}`, 400, "missing_required_parameter", "name"},
		{"sa only", "POST", "/v1/organization/projects/" + p.ID + "/service_accounts", `{"name":"x","create_service_account_only":true}`, 400, "unsupported_parameter", "create_service_account_only"},
		{"sa only type", "POST", "/v1/organization/projects/" + p.ID + "/service_accounts", `{"name":"x","create_service_account_only":"yes"}`, 400, "invalid_type", "create_service_account_only"},

		{"limit 0", "GET", "/v1/organization/projects?limit=0", "", 400, "invalid_value", "limit"},
		{"limit 101", "GET", ek + "?limit=101", "", 400, "invalid_value", "limit"},
		{"limit nan", "GET", "/v1/organization/admin_api_keys?limit=ten", "", 400, "invalid_value", "limit"},
		{"limit twice", "GET", ek + "?limit=1&limit=2", "", 400, "invalid_value", "limit"},
		{"limit empty", "GET", "/v1/organization/projects?limit=", "", 400, "invalid_value", "limit"},
		{"limit bad encoding", "GET", "/v1/organization/projects?limit=%zz", "", 400, "invalid_value", "limit"},
		{"audit limit bad encoding", "GET", "/v1/organization/audit_logs?limit=1%", "", 400, "invalid_value", "limit"},
		{"query name bad encoding", "GET", ek + "?li%zzmit=5", "", 400, "invalid_value", "li%zzmit"},
		{"bad after", "GET", ek + "?after=proj_x", "", 400, "invalid_value", "after"},
		{"bad order", "GET", ek + "?order=up", "", 400, "invalid_value", "order"},
		{"order on projects", "GET", "/v1/organization/projects?order=asc", "", 400, "unknown_parameter", "order"},
		{"unknown query", "GET", "/v1/organization/projects?foo=1", "", 400, "unknown_parameter", "foo"},
		{"bad purpose filter", "GET", ek + "?purpose=x", "", 400, "invalid_value", "purpose"},
		{"bad include_archived", "GET", "/v1/organization/projects?include_archived=maybe", "", 400, "invalid_value", "include_archived"},
		{"audit limit", "GET", "/v1/organization/audit_logs?limit=0", "", 400, "invalid_value", "limit"},
		{"audit time", "GET", "/v1/organization/audit_logs?effective_at[gt]=-1", "", 400, "invalid_value", "effective_at[gt]"},
		{"audit time nan", "GET", "/v1/organization/audit_logs?effective_at[lte]=yesterday", "", 400, "invalid_value", "effective_at[lte]"},
		{"audit type", "GET", "/v1/organization/audit_logs?event_types[]=NOT%20A%20TYPE", "", 400, "invalid_value", "event_types[]"},
		{"audit project", "GET", "/v1/organization/audit_logs?project_ids[]=nope", "", 400, "invalid_value", "project_ids[]"},
		{"audit cursor", "GET", "/v1/organization/audit_logs?before=proj_x", "", 400, "invalid_value", "before"},
		{"audit actor filter", "GET", "/v1/organization/audit_logs?actor_ids[]=key_x", "", 400, "unknown_parameter", "actor_ids[]"},

		{"sa update role", "POST", "/v1/organization/projects/" + p.ID + "/service_accounts/" + sa.ID, `{"role":"owner"}`, 400, "unsupported_role", "role"},
		{"sa update field", "POST", "/v1/organization/projects/" + p.ID + "/service_accounts/" + sa.ID, `{"api_key":"x"}`, 400, "unknown_parameter", "api_key"},
		{"sa update body", "POST", "/v1/organization/projects/" + p.ID + "/service_accounts/" + sa.ID, `[]`, 400, "invalid_json", ""},
		{"project keys limit", "GET", pk + "?limit=101", "", 400, "invalid_value", "limit"},
		{"project keys after", "GET", pk + "?after=svc_acct_x", "", 400, "invalid_value", "after"},
		{"project keys order", "GET", pk + "?order=desc", "", 400, "unknown_parameter", "order"},
		{"project keys access", "GET", pk + "?owner_project_access=all", "", 400, "invalid_value", "owner_project_access"},
		{"project keys access twice", "GET", pk + "?owner_project_access=any&owner_project_access=any", "", 400, "invalid_value", "owner_project_access"},
		{"project key update empty", "POST", pk + "/" + sa.APIKey.ID, `{}`, 400, "missing_required_parameter", "scopes"},
		{"project key update scopes", "POST", pk + "/" + sa.APIKey.ID, `{"scopes":["api.files.read"]}`, 400, "unsupported_parameter", "scopes"},
		{"project key update scopes type", "POST", pk + "/" + sa.APIKey.ID, `{"scopes":"all"}`, 400, "invalid_type", "scopes"},
		{"project key update scopes null", "POST", pk + "/" + sa.APIKey.ID, `{"scopes":null}`, 400, "invalid_type", "scopes"},
		{"project key update expiry", "POST", pk + "/" + sa.APIKey.ID, `{"scopes":[],"expires_in_seconds":60}`, 400, "unsupported_parameter", "expires_in_seconds"},
		{"project key update field", "POST", pk + "/" + sa.APIKey.ID, `{"name":"x"}`, 400, "unknown_parameter", "name"},

		{"malformed key id", "GET", ek + "/notanid", "", 404, "not_found", ""},
		{"malformed project key id", "GET", pk + "/key_", "", 404, "not_found", ""},
		{"malformed project key id delete", "DELETE", pk + "/svc_acct_06h2azmcxyds50vdkg1t8480rm", "", 404, "not_found", ""},
		{"unknown project key", "DELETE", pk + "/key_06h2azmcxyds50vdkg1t8480rm", "", 404, "not_found", ""},
		{"project key of unknown project", "GET", "/v1/organization/projects/proj_06h2azmcxyds50vdkg1t8480rm/api_keys/" + sa.APIKey.ID, "", 404, "not_found", ""},
		{"project keys of malformed project", "GET", "/v1/organization/projects/proj_x/api_keys", "", 404, "not_found", ""},
		{"malformed sa id update", "POST", "/v1/organization/projects/" + p.ID + "/service_accounts/svc_acct_x", `{"name":"x"}`, 404, "not_found", ""},
		{"malformed project id", "POST", "/v1/organization/projects/proj_short/archive", "", 404, "not_found", ""},
		{"malformed admin key id", "DELETE", "/v1/organization/admin_api_keys/zzz", "", 404, "not_found", ""},
		{"malformed sa id", "GET", "/v1/organization/projects/" + p.ID + "/service_accounts/svc_acct_", "", 404, "not_found", ""},
		{"unknown project", "GET", "/v1/organization/projects/proj_06h2azmcxyds50vdkg1t8480rm", "", 404, "not_found", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(key, tc.method, tc.path, tc.body)
			if r.Status != tc.status || r.errField("code") != tc.code || r.errField("param") != tc.param {
				t.Fatalf("got %d code=%q param=%q, want %d code=%q param=%q: %s", r.Status, r.errField("code"), r.errField("param"), tc.status, tc.code, tc.param, r.Raw)
			}
			if r.errField("message") == "" || r.errField("type") == "" {
				t.Fatalf("error without message or type: %s", r.Raw)
			}
		})
	}
	if after := e.snapshot(org.ID, p.ID); after != before {
		t.Fatalf("failed requests wrote rows: %+v → %+v", before, after)
	}
	// Through the SDK too: a registration of an unregistered type is refused
	// and never stored.
	_, err = c.Admin.Organization.ExternalKeys.New(ctx, openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
		Name: "vault", TenantID: "00000000-0000-0000-0000-000000000000", VaultURI: "https://v.vault.azure.net/", KeyName: org.ID + "--kek"}})
	if ae := apiErr(t, err, http.StatusBadRequest); ae.Code != "unsupported_type" || ae.Param != "type" {
		t.Fatalf("azure without driver: %s", ae.RawJSON())
	}
	if after := e.snapshot(org.ID, p.ID); after != before {
		t.Fatalf("refused registration wrote rows: %+v → %+v", before, after)
	}
}
